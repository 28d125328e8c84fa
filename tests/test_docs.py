"""Every `photogenic ...` command in the docs' code blocks exists and is exercised.

The commands are taken from the fenced code blocks (and indented code lines) of README.md and
docs/*.md. For each: its subcommand exists in the CLI (not the "unavailable" stand-in the lazy
group gives a command that fails to import), every `--flag` it uses appears in that subcommand's
`--help`, and the command and its flags appear in pipeline/demo.sh or in the tests, so a test or
the demo runs it. Exceptions are listed below with the reason. Fast: --help through click's
CliRunner, no stage runs.
"""
from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from photogenic.pipeline.cli import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DEMO = REPO / "pipeline" / "demo.sh"

# "subcommand path" or "subcommand path --flag" -> why neither the demo nor a test runs it.
NOT_RUN = {
    "review push --gold": "the tests push gold tasks through push(..., gold_file=...) "
                          "(tests/annotation/test_e2e.py, test_simulate_queue.py), not through the flag",
    "train --max-steps": "only overrides [train] max_steps, which the demo and the tests set in their configs",
    "filter --score-all": "the tests score every row with Cascade(..., score_all=True) "
                          "(tests/pipeline/filtering/test_cascade.py); the flag sets [job] score_all",
    "eval --seeds": "only overrides [eval] seeds, which the eval tests set in their config (tests/training/eval_fixtures.py)",
    "eval --max-prompts": "only overrides [eval] max_prompts, which the demo sets in pipeline/data/demo.toml",
}


def _code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks and of indented (4-space) code lines, continuations joined."""
    lines, fenced = [], False
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            fenced = not fenced
            lines.append(None)  # a block ends: nothing continues across it
            continue
        if fenced or raw.startswith("    photogenic "):
            lines.append(raw)
        else:
            lines.append(None)
    out: list[str] = []
    joinable = False
    for raw in lines:
        if raw is None:
            joinable = False
            continue
        stripped = raw.strip()
        if joinable and (out[-1].endswith("\\") or (stripped.startswith(("[--", "--")) and _is_photogenic(out[-1]))):
            out[-1] = out[-1].rstrip("\\").rstrip() + " " + stripped
        else:
            out.append(stripped)
        joinable = True
    return out


def _is_photogenic(line: str) -> bool:
    return bool(re.match(r"^(\$ )?(\S*/)?photogenic(\s|$)", line.strip()))


def doc_commands() -> list[tuple[str, str]]:
    """(file, command line) for every photogenic command in the docs' code."""
    found = []
    for path in DOCS:
        for line in _code_lines(path.read_text()):
            for part in re.split(r"\s(?:&&|\|\||;|\|)\s", line):
                part = part.strip()
                if _is_photogenic(part):
                    found.append((path.relative_to(REPO).as_posix(), part))
    return found


def parse(line: str) -> tuple[list[str], list[str]]:
    """(subcommand path, --flags) of a command line; [optional] brackets and placeholders ignored."""
    tokens = shlex.split(re.sub(r"^\$ ", "", line), comments=True)[1:]
    command: click.Command = cli
    path: list[str] = []
    ctx = click.Context(cli)
    flags = []
    for token in tokens:
        token = token.strip("[]")
        if token.startswith("--"):
            flags.append(token.split("=")[0].rstrip("]"))
            continue
        if token.startswith("-") or flags:  # an argument or an option's value: the path is complete
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(ctx, token)
            if sub is not None:
                command, path = sub, [*path, token]
    return path, flags


@cache
def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="photogenic")
    assert result.exit_code == 0, (path, result.output)
    return result.output


@cache
def exercised() -> str:
    """The demo (its $PG is photogenic) and every test module, as one text to grep."""
    texts = [DEMO.read_text().replace("$PG ", "photogenic ")]
    texts += [p.read_text() for p in (REPO / "tests").rglob("*.py") if p.name != "test_docs.py"]
    return "\n".join(texts)


def _path_exercised(path: list[str]) -> bool:
    text = exercised()
    if not path:
        return True
    if re.search(r"photogenic\s+" + r"\s+".join(map(re.escape, path)) + r"(\s|\"|$)", text):
        return True
    # As arguments: ["review", "push", ...], or without the group a helper adds (_cli("push", ...),
    # CliRunner().invoke(aesthetic, ["train", ...])).
    for tail in (path, path[1:]) if len(path) > 1 else (path,):
        quoted = r"\s*,\s*".join(rf"[\"']{re.escape(p)}[\"']" for p in tail)
        if re.search(quoted, text):
            return True
    return False


def _flag_exercised(flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", exercised()) is not None


COMMANDS = doc_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) > 30
    assert {f for f, _ in COMMANDS} >= {"README.md", "docs/filter.md", "docs/review.md", "docs/train.md"}


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{f}:{line[:60]}" for f, line in COMMANDS])
def test_doc_command_exists_and_is_exercised(where, line):
    path, flags = parse(line)
    tokens = shlex.split(line, comments=True)[1:]
    if tokens and not tokens[0].startswith("-"):
        assert path, f"{where}: no such command: {line}"
    text = help_text(tuple(path))
    assert "(unavailable" not in text, f"{where}: {' '.join(path)} does not load:\n{text}"
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
            f"{where}: `photogenic {' '.join(path)}` has no option {flag} ({line})"
    name = " ".join(path)
    if name not in NOT_RUN:
        assert _path_exercised(path), f"{where}: `photogenic {name}` is run neither by pipeline/demo.sh nor a test"
    for flag in flags:
        if f"{name} {flag}".strip() not in NOT_RUN and name not in NOT_RUN:
            assert _flag_exercised(flag), f"{where}: {flag} of `photogenic {name}` is used neither by the demo nor a test"


def test_exceptions_are_still_needed():
    """An exception whose command left the docs, or that a test now runs, is dropped."""
    documented = {" ".join(parse(line)[0]) for _, line in COMMANDS}
    documented |= {f"{' '.join(p)} {f}".strip() for p, fs in (parse(line) for _, line in COMMANDS) for f in fs}
    for key in NOT_RUN:
        assert key in documented, f"NOT_RUN lists {key!r}, which no doc uses any more"
