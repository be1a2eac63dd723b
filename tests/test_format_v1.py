"""Checkpoints written before the layer-stack redesign (format 1, tests/fixtures/) load, and give
the same logits, samples, scores and figures as the code that wrote them (recorded in
tests/fixtures/expected.json by tests/fixtures/make_v1.py at commit 03d49e6)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import run

from charrnn import checkpoint, model

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture(params=sorted(EXPECTED))
def case(request):
    return request.param, FIXTURES / f"{request.param}.npz", EXPECTED[request.param]


def test_logits_of_the_best_weights_are_unchanged(case):
    _, path, want = case
    ck = checkpoint.load(path)
    x = np.array(want["x"], dtype=np.int32)[:, None]  # (8, 1)
    logits = model.forward(ck.sampling_params, ck.cfg, x).logits[:, 0]
    # equal to float32 rounding: OpenBLAS and NumPy pick their kernels by processor (these were recorded
    # on an AVX2 machine; an AVX-512 one differs in the last bit of about half the logits)
    np.testing.assert_allclose(logits.astype(np.float64), np.array(want["logits"]), rtol=1e-5, atol=1e-6)


def as_recorded(out: str) -> str:
    """Samples as the code of format 1 printed them: running texts separated by a blank line rather than
    each after a '=== sample K of N ===' line."""
    return "\n".join(re.split(r"^=== sample \d+ of \d+ ===\n", out, flags=re.M)[1:]) if out.startswith("===") else out


def test_samples_are_unchanged(case, capsys):
    _, path, want = case
    code, out, err = run(capsys, "sample", path, "-n", "4", "--length", "30", "--seed", "3", "--allow-seen")
    assert code == 0, err
    assert as_recorded(out) == want["sample"]
    code, out, err = run(capsys, "sample", path, "-n", "2", "--length", "20", "--seed", "5", "--prime", "an",
                         "--temperature", "0.7")
    assert code == 0, err
    assert as_recorded(out) == want["sample_primed"]


def test_eval_is_unchanged(case, capsys):
    name, path, want = case
    code, out, err = run(capsys, "eval", path, FIXTURES / f"{name}.eval.txt", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["chars"] == want["eval"]["chars"] and got["unk_chars"] == want["eval"]["unk_chars"]
    assert got["mode"] == want["eval"]["mode"]
    assert got["loss"] == pytest.approx(want["eval"]["loss"], rel=1e-6)  # float32 kernels differ by processor


def test_inspect_figures_are_unchanged(case, capsys):
    _, path, want = case
    code, out, err = run(capsys, "inspect", path, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["format_version"] == 1
    assert s["parameters"]["total"] == want["parameters_total"] == s["parameters"]["textbook_total"]
    assert s["training"]["steps"] == want["steps"]
    assert s["training"]["best_val_loss"] == want["best_val_loss"]


def test_resaved_checkpoint_is_the_same(case, tmp_path):
    """Loading and saving again keeps every array and every metadata value the old file had."""
    _, path, _ = case
    again = tmp_path / "again.npz"
    checkpoint.save(again, checkpoint.load(path))
    with np.load(path) as a, np.load(again) as b:
        assert set(a.files) == set(b.files)
        for k in a.files:
            if k != "meta":
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        old, new = json.loads(a["meta"].tobytes()), json.loads(b["meta"].tobytes())
    assert new.pop("objective") == "next"  # fields added since, with the values old files mean
    assert new["train"].pop("mask_rate") == 0.15 and new.pop("mask_id") is None
    assert new.pop("backend") == ""  # not recorded then
    assert new == old
