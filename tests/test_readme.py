"""The README's examples marked `<!-- checked -->`: each command is run as written, and its output
(stdout and stderr together, as in a terminal) must have the shape the README shows: the same
kinds of lines in the same order (see `shape`).

The default run uses a tiny names.txt and shortens the training command, in seconds;
`pytest -m slow tests/test_readme.py` runs every command exactly as written on corpora/ (two
minutes of training), as when the examples were made."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
from helpers import NAMES_X4

from charrnn.cli import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
QUICK = {"--time 2": "--steps 4 --eval-every 2 --hidden-size 8"}  # the smoke's shorter training
NOTES = re.compile(r"^(novelty|Warning|Note):")  # what `sample` prints besides its samples


def examples() -> list[tuple[str, list[str]]]:
    """(command, the output lines shown after it) for every `$ charrnn ...` in a checked block."""
    found = []
    for block in re.findall(r"<!-- checked -->\n```\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *output = part.rstrip("\n").split("\n")
            found.append((command, output))
    return found


def shape(command: str, lines: list[str]) -> list[str]:
    """The kinds of lines, in order: each line's first word with its digits as #, a run of one kind
    counted once, lines elided with '...' skipped; a sample is just <text>."""
    kinds: list[str] = []
    for line in lines:
        if not line.strip() or line.strip() == "...":
            continue
        if command.startswith("charrnn sample") and not NOTES.match(line):
            kind = "<text>"
        else:
            kind = re.sub(r"\d+", "#", line.split()[0])
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def run_as_shown(command: str) -> list[str]:
    """The output lines of `charrnn ...` in process, stdout and stderr interleaved as in a terminal."""
    args = shlex.split(command)
    assert args[0] == "charrnn", command
    both = io.StringIO()
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        try:
            main(args[1:])
        except SystemExit as e:
            assert not e.code, (command, both.getvalue())
    return both.getvalue().splitlines()


def check_all(commands: dict[str, str] | None = None) -> None:
    assert len(examples()) >= 5  # train, sample, inspect, eval, export
    for command, shown in examples():
        ran = command
        for long, short in (commands or {}).items():
            ran = ran.replace(long, short)
        assert shape(command, run_as_shown(ran)) == shape(command, shown), command


def test_the_readme_examples_have_the_shape_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "names.txt").write_text(NAMES_X4)
    check_all(QUICK)


def test_shape_sees_a_missing_or_extra_kind_of_line():
    train = ["data   lines mode", "step  200  train 2.2", "step  400  train 2.1", "done: reached", "saved x"]
    assert shape("charrnn train x", train) == ["data", "step", "done:", "saved"]
    assert shape("charrnn train x", train[:1] + train[3:]) != shape("charrnn train x", train)
    assert shape("charrnn sample m.npz", ["anna", "bob", "...", "novelty: 3 of 4"]) == ["<text>", "novelty:"]


@pytest.mark.slow
def test_the_readme_examples_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpora").symlink_to(ROOT / "corpora")
    check_all()
