"""[[review.passes]]: defaults equal the two passes of before, validation names the key, the older
[review.pass1]/[review.pass2] tables still configure the default passes."""
from __future__ import annotations

import tomllib

import pytest

from photogenic.pipeline.core.config import ConfigError, defaults_toml, dump_config, parse_config
from photogenic.pipeline.core.config.review import (ReviewConfig, export_sources, pass_label,
                                                    pass_number, pass_token)


def _review(toml: str) -> ReviewConfig:
    return parse_config(tomllib.loads(toml)).review


def test_default_passes_are_the_two_passes_of_before():
    review = ReviewConfig()
    assert review.pass_names() == ["pass1", "pass2"]
    p1, p2 = review.passes
    assert (p1.input, p1.label_config, p1.annotator_group, p1.rule) == ("candidates", "keep", "generalist", "any")
    assert (p1.overlap_annotators, p1.overlap_fraction, p1.min_mean_rating, p1.gold_annotators) == (2, 0.1, None, 3)
    assert (p2.input, p2.label_config, p2.annotator_group, p2.rule) == ("pass1", "rate", "specialist", "majority")
    assert (p2.overlap_annotators, p2.overlap_fraction, p2.min_mean_rating) == (3, 1.0, 3.5)
    assert review.last_pass is p2 and pass_number(review, "pass2") == 2
    assert [pass_token(n) for n in review.pass_names()] == ["1", "2"]  # Label Studio markers as before
    assert pass_label("pass1") == "pass 1" and pass_label("final") == "final"
    assert export_sources(review) == ["candidates", "pass1", "pass2"]


def test_defaults_toml_and_dump_round_trip_the_passes():
    text = defaults_toml()
    assert text.count("[[review.passes]]") == 2
    assert parse_config(tomllib.loads(text)).review == ReviewConfig()
    custom = _review('[[review.passes]]\nname = "a"\n[[review.passes]]\nname = "b"\nrule = "majority"\n')
    again = parse_config(tomllib.loads(dump_config(parse_config({"review": custom.model_dump()})))).review
    assert again == custom


def test_passes_by_name_or_number_and_errors_list_the_names():
    review = _review('[[review.passes]]\nname = "broad"\n[[review.passes]]\nname = "specialist"\n'
                     'rule = "majority"\n[[review.passes]]\nname = "final"\nrule = "majority"\n'
                     'min_mean_rating = 4.0\n')
    assert review.pass_config("final") is review.passes[2] and review.pass_config(2).name == "specialist"
    assert review.pass_config("1").name == "broad"
    assert [p.input for p in review.passes] == ["candidates", "broad", "specialist"]
    assert [p.label_config for p in review.passes] == ["keep", "rate", "rate"]
    with pytest.raises(ValueError, match="configured passes: 1 broad, 2 specialist, 3 final"):
        review.pass_config("pass2")
    with pytest.raises(ValueError, match="configured passes"):
        review.pass_config(4)


def test_older_pass_tables_configure_the_default_passes():
    review = _review('[review.pass2]\nmin_mean_rating = 4.0\noverlap_annotators = 5\n')
    assert review.pass_names() == ["pass1", "pass2"]
    assert review.passes[1].min_mean_rating == 4.0 and review.passes[1].overlap_annotators == 5
    assert review.passes[1].rule == "majority" and review.passes[0] == ReviewConfig().passes[0]


@pytest.mark.parametrize("toml, message", [
    ('[[review.passes]]\nname = "a"\n[[review.passes]]\nname = "a"\n',
     r"review.passes\[1\].name: pass name 'a' is used twice"),
    ('[[review.passes]]\nname = "a"\ninput = "nope"\n',
     r"review.passes\[0\].input: 'nope' is not a pass"),
    ('[[review.passes]]\nname = "a"\ninput = "b"\n[[review.passes]]\nname = "b"\n',
     r"review.passes\[0\].input: 'b' comes later"),
    ('[[review.passes]]\nname = "a"\ninput = "a"\n', r"'a' is this pass itself"),
    ('[review.pass1]\nrule = "any"\n[[review.passes]]\nname = "a"\n',
     r"\[review.pass1\] and \[\[review.passes\]\] both given"),
    ('[[review.passes]]\nname = "media"\n', r"'media' is reserved"),
    ('[[review.passes]]\nname = "Bad Name"\n', r"review.passes.0.name"),
    ('[[review.passes]]\nrule = "any"\n', r"review.passes.0.name: Field required"),
    ('[[review.passes]]\nname = "a"\nlabel_config = "stars"\n', r"neither a built-in label config"),
    ('[[review.passes]]\nname = "a"\nbogus = 1\n', r"unknown key 'review.passes.0.bogus'"),
    ('[review.pass1]\nbogus = 1\n', r"unknown key 'review.passes.0.bogus'"),
    ('[review]\npasses = []\n', r"review.passes: List should have at least 1 item"),
])
def test_bad_passes_are_errors_that_name_the_key(toml, message):
    with pytest.raises(ConfigError, match=message):
        _review(toml)
