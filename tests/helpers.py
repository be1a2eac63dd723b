"""What several test files share: the texts they train on, the tiny training options, and
the ways they run `charrnn` in process. Fixtures built from these are in conftest.py.

Tests import from here as `from helpers import ...` (pytest puts tests/ on sys.path).

Two texts and two option sets exist in two versions because the tests were written
against them and some assertions depend on which (a step count, a hidden size, a
vocabulary size); the names say which is which.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from charrnn import data
from charrnn.cli import main
from charrnn.model import ModelConfig
from charrnn.trainer import TrainConfig, Trainer

# ---------------------------------------------------------------- texts

TWELVE_NAMES = ["anna", "bob", "carl", "dora", "emil", "fina", "gus", "hana", "ivo", "jan", "kai", "lena"]
# 19 distinct letters, so a lines-mode vocabulary of 21 with <UNK> and <EOS>
NAMES_X4 = "\n".join(TWELVE_NAMES * 4) + "\n"  # the CLI tests' names (fixture names_x4_file)
NAMES_X3 = "\n".join(TWELVE_NAMES * 3) + "\n"  # the error-path tests' names (names_x3_file, good)
TEN_NAMES_X3 = "\n".join(TWELVE_NAMES[:10] * 3)  # the library tests' names (small_trainer), no final newline

PROSE_X6 = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
            "it was the age of foolishness.\n\nIt was the epoch of belief, it was the epoch of incredulity.\n") * 6
PROSE_X4 = ("It was the best of times, it was the worst of times, it was the age of wisdom.\n\n"
            "It was the epoch of belief, it was the epoch of incredulity.\n") * 4

# ---------------------------------------------------------------- tiny training runs

# hidden 16, one layer, 12 steps, evaluated at steps 6 and 12 (names_ckpt)
TINY_H16_12STEPS = ["--hidden-size", "16", "--layers", "1", "--steps", "12", "--eval-every", "6", "--quiet"]
# hidden 8, one layer, 4 steps, evaluated at steps 2 and 4 (good)
TINY_H8_4STEPS = ["--hidden-size", "8", "--layers", "1", "--steps", "4", "--eval-every", "2", "--quiet"]


def small_trainer(text, mode, cell="lstm", seed=0, steps=20):
    """A Trainer of a 2-layer, hidden-16 model on `text`, for library tests that train without the CLI."""
    c = data.make_corpus(text, mode, val_fraction=0.2, seed=seed)
    cfg = ModelConfig(len(c.vocab), cell, 16, 2, dropout=0.1)
    return Trainer(c, cfg, TrainConfig(seq_len=8, batch_size=4, steps=steps, eval_every=10, seed=seed))


# ---------------------------------------------------------------- running charrnn

# for `charrnn` in a real process: one BLAS thread, stderr unbuffered
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `charrnn args`, in process, output caught by capsys."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def run_captured(*args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `charrnn args`, in process, without capsys: for fixtures
    wider than one test and for hypothesis tests, where a per-test capsys does not fit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run_quietly(*args) -> int:
    """`charrnn args` in process with its output thrown away (for fixtures wider than one test)."""
    return run_captured(*args)[0]


def error_line(code: int, err: str) -> str:
    """The one `Error:` line of a failed command; fails the test on a traceback or a 0 exit."""
    assert "Traceback" not in err, err
    assert code in (1, 2), (code, err)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    return errors[0]


def flat(s: str) -> str:
    """`s` with every run of whitespace (line wrapping included) as one space."""
    return " ".join(s.split())


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint file, read as plain data (never unpickled)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- finite differences


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """|a - b| / (|a| + |b|): what the gradient checks compare."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30))


def numeric_grad(f, arr: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of arr (changed in place
    and put back)."""
    g = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        up = f()
        arr[i] = old - eps
        down = f()
        arr[i] = old
        g[i] = (up - down) / (2 * eps)
    return g
