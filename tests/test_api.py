"""The Python API (charrnn.api): the same results as the commands, and the same errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import run

import charrnn
from charrnn.errors import CharrnnError, OptionError


def test_train_load_and_use_a_model_like_the_cli(tmp_path, capsys, names_x4_file):
    out = tmp_path / "m.npz"
    m = charrnn.train(names_x4_file, out=out, steps=12, hidden_size=16, layers=1, eval_every=6, quiet=True)
    assert isinstance(m, charrnn.Model) and m.checkpoint.meta.progress.step == 12
    again = charrnn.train(names_x4_file, out=out, steps=15, resume=out)  # charrnn.train stays the function
    assert again.checkpoint.meta.progress.step == 15
    m = charrnn.load(out)
    code, cli_out, _ = run(capsys, "sample", out, "-n", "5", "--seed", "1")
    assert code == 0 and m.sample(5, seed=1) == cli_out.splitlines()
    held = tmp_path / "held.txt"
    held.write_text("anna\nkai\nzoe\n")
    code, cli_out, _ = run(capsys, "eval", out, held, "--json")
    assert m.score(held.read_text()) == pytest.approx(json.loads(cli_out)["loss"], rel=1e-12)
    filled = m.fill("a_na")
    assert len(filled) == 4 and filled[0] == "a" and filled[2:] == "na"
    assert m.embed(["anna", "bob", "kai"]).shape == (3, 16)


def test_errors_are_charrnns(tmp_path, names_x4_file):
    with pytest.raises(OptionError, match="no option 'colour'"):
        charrnn.train(names_x4_file, out=tmp_path / "m.npz", colour="red")
    with pytest.raises(OptionError, match="--hidden-size must be at least 1"):
        charrnn.train(names_x4_file, out=tmp_path / "m.npz", hidden_size=0)
    with pytest.raises(CharrnnError, match="no such file"):
        charrnn.load(tmp_path / "missing.npz")


def test_import_charrnn_stays_light():
    code = "import sys, charrnn; print('numpy' in sys.modules, 'charrnn.api' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "False"], r.stderr


def test_sample_runs_in_batches_like_the_command(capsys, names_ckpt, monkeypatch):
    """Model.sample(n) generates BATCH at a time as `charrnn sample` does: the same names, and
    working memory that does not grow with n."""
    from charrnn import commands, sample

    monkeypatch.setattr(sample, "BATCH", 3)
    monkeypatch.setattr(commands, "BATCH", 3)
    code, cli_out, _ = run(capsys, "sample", names_ckpt, "-n", "7", "--seed", "1", "--allow-seen")
    assert code == 0
    assert charrnn.load(names_ckpt).sample(7, seed=1, novel=False) == cli_out.splitlines()


def test_a_model_shows_as_one_line(names_ckpt):
    """At a Python prompt `m` printed every weight, the optimizer's state and 32,000 line
    hashes; now it says what the model is."""
    m = charrnn.load(names_ckpt)
    text = repr(m)
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith(f"<charrnn.Model {names_ckpt}: lstm, 1 × 16, float32, vocabulary ")
    assert "lines mode, 12 steps, best val loss " in text
    assert "array" not in repr(m.checkpoint) and len(repr(m.checkpoint)) < 300
