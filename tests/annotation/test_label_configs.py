"""Label configs of a pass: the built-in "keep" / "rate" ones (today's pass 1 / pass 2 XML) or a
file; Label Studio markers and titles of the default passes are spelled as before."""
from __future__ import annotations

import pytest

from photogenic.annotation.lsclient import LabelStudioError
from photogenic.annotation.projects import _title, has_ratings, instructions, label_config, marker
from photogenic.pipeline.core.config.review import PassConfig, ReviewConfig


def test_builtin_label_configs_and_what_they_ask():
    grid, rate = (label_config(p) for p in ReviewConfig().passes)
    assert not has_ratings(grid) and has_ratings(rate)
    assert instructions(grid).startswith("Tick KEEP") and "Composition" in instructions(rate)
    assert '<Repeater on="$images"' in grid and 'name="keep_{{idx}}"' in grid  # pass 1: a grid
    one = label_config(PassConfig(name="pass1", label_config="keep", grid_size=1))
    assert instructions(one).startswith("Press K to keep") and "Repeater" not in one


def test_grid_size_defaults_and_limits():
    first, second = ReviewConfig().passes
    assert (first.grid_size, second.grid_size) == (16, 1)
    with pytest.raises(ValueError, match="grid_size: a grid .* takes keep toggles only"):
        ReviewConfig(passes=[{"name": "pass1", "label_config": "rate", "grid_size": 9}])


def test_custom_label_config_file(tmp_path):
    xml = tmp_path / "mine.xml"
    xml.write_text('<View><Image name="image" value="$image"/><Rating name="lighting" toName="image"/></View>')
    p = PassConfig(name="mine", label_config=str(xml))
    assert label_config(p) == xml.read_text() and has_ratings(label_config(p))
    with pytest.raises(LabelStudioError, match="review pass 'gone': label_config .*gone.xml cannot be read"):
        label_config(PassConfig(name="gone", label_config=str(tmp_path / "gone.xml")))


def test_markers_and_titles_of_default_passes_are_unchanged(tmp_path):
    rid = "0" * 32
    assert marker(rid, "pass1") == f"[photogenic run={rid} pass=1]"
    assert marker(rid, "final") == f"[photogenic run={rid} pass=final]"
    run = tmp_path / "myrun"
    assert _title(run, rid, "pass2") == "Photogenic pass 2 myrun 000000"
    assert _title(run, rid, "final") == "Photogenic final myrun 000000"
