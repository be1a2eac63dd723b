"""Fixtures shared by the test files: text files to train on and small trained checkpoints.

The texts and training options behind them are in helpers.py.
"""

import signal

import pytest
from helpers import NAMES_X3, NAMES_X4, PROSE_X4, PROSE_X6, TINY_H8_4STEPS, TINY_H16_12STEPS, run, run_quietly

# A test run started in the background by a shell without job control inherits SIGINT ignored, and
# so would every charrnn it starts: the Ctrl-C tests need it delivered as a terminal delivers it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# tests/fixtures/ holds fixture checkpoints and the script that wrote them (make_v1.py), not tests
collect_ignore = ["fixtures"]


@pytest.fixture
def names_x4_file(tmp_path):
    """names.txt: twelve names, four times over (NAMES_X4)."""
    p = tmp_path / "names.txt"
    p.write_text(NAMES_X4)
    return p


@pytest.fixture
def names_x3_file(tmp_path):
    """names.txt: twelve names, three times over (NAMES_X3)."""
    p = tmp_path / "names.txt"
    p.write_text(NAMES_X3)
    return p


@pytest.fixture
def prose_file(tmp_path):
    """prose.txt: two paragraphs of Dickens, six times over (PROSE_X6)."""
    p = tmp_path / "prose.txt"
    p.write_text(PROSE_X6)
    return p


@pytest.fixture
def names_ckpt(tmp_path, names_x4_file, capsys):
    """names.npz: an LSTM trained on names_x4_file with TINY_H16_12STEPS, for each test."""
    out = tmp_path / "names.npz"
    code, _, err = run(capsys, "train", names_x4_file, "--out", out, *TINY_H16_12STEPS)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A lines checkpoint and a stream checkpoint, with their texts, trained once per module:
    names.txt (NAMES_X3) -> names.npz and prose.txt (PROSE_X4) -> prose.npz, TINY_H8_4STEPS."""
    d = tmp_path_factory.mktemp("good")
    (d / "names.txt").write_text(NAMES_X3)
    (d / "prose.txt").write_text(PROSE_X4)
    assert run_quietly("train", d / "names.txt", "--out", d / "names.npz", *TINY_H8_4STEPS) == 0
    assert run_quietly("train", d / "prose.txt", "--out", d / "prose.npz", "--mode", "stream", "--seq-len", "16",
                       *TINY_H8_4STEPS) == 0
    return d
