"""`charrnn fill` and `charrnn embed`, and what the other commands do with a bidirectional model:
as users run them, and against what the model computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import NAMES_X4, PROSE_X6, error_line, run, run_quietly

from charrnn import checkpoint, fill, model
from charrnn.config import Mode, ModelConfig, TrainConfig
from charrnn.data import make_corpus
from charrnn.trainer import Trainer

BI = ["--bidirectional", "--hidden-size", "16", "--layers", "1", "--steps", "12", "--eval-every", "6", "--quiet"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A bidirectional and a forward lines model, and a bidirectional stream model."""
    d = tmp_path_factory.mktemp("fill")
    (d / "names.txt").write_text(NAMES_X4)
    (d / "prose.txt").write_text(PROSE_X6)
    assert run_quietly("train", d / "names.txt", "-o", d / "bi.npz", *BI) == 0
    assert run_quietly("train", d / "names.txt", "-o", d / "fw.npz", *BI[1:]) == 0
    assert run_quietly("train", d / "prose.txt", "-o", d / "bis.npz", "--mode", "stream", "--seq-len", "32",
                       *BI) == 0
    assert run_quietly("train", d / "names.txt", "-o", d / "bim.npz", "--objective", "masked", *BI) == 0
    return d


@pytest.mark.parametrize("ckpt,objective,version,head", [("bi.npz", "neighbors", 4, 16), ("bim.npz", "masked", 2, 0)])
def test_bidirectional_checkpoint_format_and_mask_id(models, ckpt, objective, version, head):
    """New bidirectional models predict each character from its neighbours, through a head as wide as a
    direction, by default (format 4, so an older charrnn refuses them rather than misreading them);
    masked ones stay format 2, without a head."""
    ck = checkpoint.load(models / ckpt)
    assert ck.format_version == version and ck.cfg.bidirectional and ck.cfg.head == head
    assert ck.meta.objective.value == ck.cfg.objective.value == objective
    assert ck.meta.mask_id == len(ck.vocab) and ck.params["W_x0"].shape[0] == len(ck.vocab) + 1
    assert "W_h0_rev" in ck.params and ck.params["W_y"].shape == (head or 32, len(ck.vocab))
    assert checkpoint.load(models / "fw.npz").format_version == 1  # forward models stay readable by older charrnn


@pytest.mark.parametrize("ckpt", ["bi.npz", "bim.npz", "fw.npz"])
def test_fill_replaces_every_blank_with_the_likeliest_choice(models, capsys, ckpt):
    code, out, err = run(capsys, "fill", models / ckpt, "a_n_", "--top", "3", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["text"] == "a_n_" and len(r["filled"]) == 4 and "_" not in r["filled"]
    assert r["filled"][0] == "a" and r["filled"][2] == "n"
    for b in r["blanks"]:
        cands = b["candidates"]
        assert r["filled"][b["position"]] == b["char"] == cands[0][0]
        assert len(cands) == 3 and all(p1 >= p2 for (_, p1), (_, p2) in zip(cands, cands[1:], strict=False))
    assert sorted(r["order"]) == [0, 1]


def test_bidirectional_fill_agrees_with_the_model(models):
    """One blank: the choice and its probability are the softmax at that position, over characters."""
    ck = checkpoint.load(models / "bi.npz")
    f = fill.fill(ck, "do_a", top=30)
    ids = ck.vocab.encode("do_a")[0].astype(np.int64)
    x = np.r_[1, ids, 1]
    x[3] = ck.meta.mask_id
    z = model.forward(ck.sampling_params, ck.cfg, x[:, None].astype(np.int32)).logits[3, 0, 2:].astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    assert f.blanks[0].char == ck.vocab.token(int(np.argmax(p)) + 2)
    assert f.blanks[0].candidates[0][1] == pytest.approx(p.max(), rel=1e-5)


def test_forward_fill_of_one_blank_is_exact(models):
    """A forward model's choice for one blank is the candidate whose whole line is likeliest."""
    ck = checkpoint.load(models / "fw.npz")
    f = fill.fill(ck, "ca_l", top=50)
    totals = {}
    for c in ck.vocab.chars:
        line = "ca" + c + "l"
        ids = np.r_[1, ck.vocab.encode(line)[0]].astype(np.int32)
        y = np.r_[ids[1:], 1].astype(np.int32)
        nll = model.token_nll(model.forward(ck.sampling_params, ck.cfg, ids[:, None]).logits, y[:, None])
        totals[c] = -float(nll.astype(np.float64).sum())
    best = max(totals, key=totals.get)
    assert f.blanks[0].char == best
    z = np.array(list(totals.values()))
    assert f.blanks[0].candidates[0][1] == pytest.approx(1 / np.exp(z - z.max()).sum(), rel=1e-4)  # its posterior


def test_fill_reads_stdin_one_line_at_a_time(models, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("an_a\nb_b\n"))
    code, out, err = run(capsys, "fill", models / "bi.npz")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0][:2] == "an" and lines[1][0] == "b" and "_" not in out


def test_stream_bidirectional_fill(models, capsys):
    code, out, err = run(capsys, "fill", models / "bis.npz", "It was the _ge of wis_om")
    assert code == 0, err
    assert out.startswith("It was the ") and len(out.strip()) == len("It was the _ge of wis_om")


@pytest.mark.parametrize("args,message", [
    (["no blanks here"], "no blank ('_') in the text"),
    (["a__b", "--blank", "__"], "--blank must be a single character"),
    (["a" * 70 + "_"], "this model reads at most 64 at once"),
    (["a_", "--top", "0"], "--top must be at least 1"),
])
def test_fill_errors_are_one_line(models, capsys, args, message):
    code, _, err = run(capsys, "fill", models / "bi.npz", *args)
    assert message in error_line(code, err)


def test_forward_fill_with_many_blanks_warns_of_the_time(models, capsys):
    code, out, err = run(capsys, "fill", models / "fw.npz", "______")
    assert code == 0 and "6 blanks with a forward model" in err and len(out.strip()) == 6


def test_sample_on_a_bidirectional_model_points_to_fill(models, capsys):
    code, _, err = run(capsys, "sample", models / "bi.npz")
    assert "is a bidirectional model" in error_line(code, err) and "charrnn fill" in err


@pytest.mark.parametrize("ckpt,objective,per", [("bi.npz", "neighbors", "per char, both sides"),
                                                 ("bim.npz", "masked", "per hidden char")])
def test_eval_and_inspect_know_the_kind(models, capsys, ckpt, objective, per):
    code, out, err = run(capsys, "eval", models / ckpt, models / "names.txt", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["objective"] == objective and 0 <= r["fill_accuracy"] <= 1 and r["fill_blanks"] == 48
    code2, out2, _ = run(capsys, "eval", models / ckpt, models / "names.txt", "--json")
    assert json.loads(out2) == r  # a fixed seed: the same figures every time
    code, out, _ = run(capsys, "eval", models / ckpt, models / "names.txt")
    assert f"nats {per}" in out
    code, out, err = run(capsys, "inspect", models / ckpt, "--json")
    s = json.loads(out)
    assert s["config"]["model"]["bidirectional"] and s["data"]["objective"] == objective
    assert s["parameters"]["total"] == s["parameters"]["textbook_total"]
    code, out, err = run(capsys, "inspect", models / ckpt)
    assert "bidirectional lstm" in out and "textbook formula" in out
    assert ("every character, from both sides" if objective == "neighbors" else "the hidden characters") in out


def test_embed_writes_one_vector_per_line_and_finds_neighbours(models, capsys, tmp_path):
    out_file = tmp_path / "v.npy"
    code, _, err = run(capsys, "embed", models / "bi.npz", models / "names.txt", "-o", out_file)
    assert code == 0, err
    v = np.load(out_file)
    assert v.shape == (48, 32) and v.dtype == np.float32
    code, out, err = run(capsys, "embed", models / "bi.npz", models / "names.txt", "--nearest", "3", "--query", "anna")
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and len(rows) == 3 and rows[0][1] == "anna" and float(rows[0][0]) == pytest.approx(1.0, abs=1e-5)
    # the vector is [h→ at the last character ; h← at the first]
    ck = checkpoint.load(models / "bi.npz")
    ids = ck.vocab.encode("anna")[0]
    fwd = model.forward(ck.sampling_params, ck.cfg, np.r_[1, ids, 1][:, None].astype(np.int32))
    np.testing.assert_allclose(v[0], np.r_[fwd.layers[0].hs[4, 0], fwd.layers[1].hs[1, 0]], rtol=1e-5)


def test_embed_of_a_forward_model_is_its_final_state(models):
    ck = checkpoint.load(models / "fw.npz")
    ids = [ck.vocab.encode(s)[0] for s in ("bob", "lena")]
    v = fill.embed(ck, ids)
    for row, t in zip(v, ids, strict=True):
        fwd = model.forward(ck.sampling_params, ck.cfg, np.r_[1, t][:, None].astype(np.int32))
        # atol: a batch of two and a batch of one round differently (BLAS), by ~1e-9 on units near 0
        np.testing.assert_allclose(row, fwd.state[-1][0][0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("objective,head", [("neighbors", 0), ("neighbors", 32), ("masked", 0)])
def test_a_bidirectional_model_learns_to_fill_from_the_far_end(objective, head):
    """Lines 'X + 20 random letters + X': the blanked last character is decided by the first one
    alone, 20 characters away: a model trained for seconds fills it nearly always."""
    rng = np.random.default_rng(0)
    ends = "xyz"
    lines = []
    for _ in range(600):
        e = ends[rng.integers(3)]
        lines.append(e + "".join(rng.choice(list("abcdefghij"), 20)) + e)
    c = make_corpus("\n".join(lines) + "\n", "lines", val_fraction=0.0)
    cfg = ModelConfig(len(c.vocab), "lstm", 32, 1, bidirectional=True, objective=objective, head=head)
    tr = Trainer(c, cfg, TrainConfig(steps=600, eval_every=600, batch_size=32, lr=1e-2, mask_rate=0.3))
    tr.fit()
    ck = tr.checkpoint()
    test = [ends[i % 3] + "".join(rng.choice(list("abcdefghij"), 20)) + ends[i % 3] for i in range(90)]
    texts = [ck.vocab.encode(t)[0].astype(np.int64) for t in test]
    got = fill.fill_each(ck, texts, [21] * len(texts))
    right = np.mean([ck.vocab.token(int(g)) == t[-1] for g, t in zip(got, test, strict=True)])
    assert right >= 0.95, right


@pytest.mark.parametrize("objective,head", [("neighbors", 6), ("masked", 0)])
@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_bidirectional_resume_is_exact(tmp_path, mode, objective, head):
    text = NAMES_X4 if mode == "lines" else PROSE_X6
    c = make_corpus(text, mode, val_fraction=0.2)
    cfg = ModelConfig(len(c.vocab), "lstm", 8, 2, dropout=0.2, bidirectional=True, objective=objective, head=head)
    tc = dict(batch_size=4, seq_len=16, eval_every=3, lr=1e-2)
    whole = Trainer(c, cfg, TrainConfig(steps=8, **tc))
    whole.fit()
    first = Trainer(c, cfg, TrainConfig(steps=5, **tc))
    first.fit()
    checkpoint.save(tmp_path / "a.npz", first.checkpoint())
    ck = checkpoint.load(tmp_path / "a.npz")
    assert ck.cfg.objective.value == objective
    second = Trainer(make_corpus(text, Mode(mode), 0.2, vocab=ck.vocab), ck.cfg, TrainConfig(steps=8, **tc), resume=ck)
    second.fit()
    for k in whole.params:
        np.testing.assert_array_equal(whole.params[k], second.params[k], err_msg=k)
    np.testing.assert_array_equal(np.float32(whole.train_losses), np.float32(second.train_losses))


@pytest.mark.parametrize("args,says", [
    (["--objective", "neighbors"], "is for bidirectional models: add --bidirectional"),
    (["--bidirectional", "--objective", "next"], "--objective must be masked or neighbors, not 'next'"),
    (["--bidirectional", "--objective", "bert"], "--objective must be masked or neighbors, not 'bert'"),
    (["--head", "8"], "--head is for bidirectional models: add --bidirectional"),
    (["--bidirectional", "--head", "-1"], "--head must be at least 0, not -1"),
])
def test_objective_option_errors(models, capsys, tmp_path, args, says):
    code, _, err = run(capsys, "train", models / "names.txt", "-o", tmp_path / "x.npz", "--steps", "1", *args)
    assert code == 2 and says in error_line(code, err) and not (tmp_path / "x.npz").exists()


def test_resume_keeps_the_objective(models, capsys, tmp_path):
    import shutil

    shutil.copy(models / "bim.npz", tmp_path / "m.npz")
    code, _, err = run(capsys, "train", models / "names.txt", "--resume", tmp_path / "m.npz", "--objective",
                       "neighbors", "--steps", "14")
    assert "--objective cannot change when resuming" in error_line(code, err)
    code, _, err = run(capsys, "train", models / "names.txt", "--resume", tmp_path / "m.npz", "--head", "16",
                       "--steps", "14")
    assert "--head cannot change when resuming (the checkpoint has 0)" in error_line(code, err)
    code, _, err = run(capsys, "train", models / "names.txt", "--resume", tmp_path / "m.npz", "--steps", "14", "-q")
    assert code == 0, err
    ck = checkpoint.load(tmp_path / "m.npz")
    assert ck.cfg.objective.value == "masked" and ck.format_version == 2 and ck.meta.progress.step == 14
