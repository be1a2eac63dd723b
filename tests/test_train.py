"""charrnn.trainer and `charrnn train` over time: the same seed gives the same run, resuming
gives the run that never stopped, and a run whose loss diverges keeps its last good
checkpoint.

Saving checkpoints safely is in test_checkpoint.py, stopping by a signal in test_signals.py."""

import json
import os
import signal
import time
import warnings

import numpy as np
import pytest
from helpers import TEN_NAMES_X3, TINY_H8_4STEPS, TINY_H16_12STEPS, arrays_of, error_line, run, small_trainer

from charrnn import checkpoint, data, sample
from charrnn.model import ModelConfig
from charrnn.trainer import TrainConfig, Trainer

# ---------------------------------------------------------------- determinism


def test_same_seed_same_model_losses_and_samples():
    runs = []
    for _ in range(2):
        tr = small_trainer(TEN_NAMES_X3, "lines")
        tr.fit()
        s = sample.generate(tr.params, tr.model_cfg, tr.corpus.vocab, "lines", n=5,
                            rng=np.random.default_rng(7))
        runs.append((tr.params, tr.train_losses, tr.val_losses, s.texts))
    (p1, l1, v1, s1), (p2, l2, v2, s2) = runs
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert l1 == l2 and v1 == v2 and s1 == s2
    other = small_trainer(TEN_NAMES_X3, "lines", seed=1)
    other.fit()
    assert not np.array_equal(other.params["W_h0"], p1["W_h0"])


def test_float64_is_selectable():
    c = data.make_corpus(TEN_NAMES_X3, "lines")
    tr = Trainer(c, ModelConfig(len(c.vocab), "gru", 8, 1, dtype="float64"), TrainConfig(steps=3, eval_every=3))
    tr.fit()
    assert all(p.dtype == np.float64 for p in tr.params.values())


# ---------------------------------------------------------------- resume


def test_resume_continues_where_it_stopped(tmp_path, capsys, names_x4_file):
    full, half = tmp_path / "full.npz", tmp_path / "half.npz"
    common = ["--hidden-size", "16", "--layers", "2", "--dropout", "0.1", "--eval-every", "5", "--quiet"]
    assert run(capsys, "train", names_x4_file, "--out", full, "--steps", 20, *common)[0] == 0
    assert run(capsys, "train", names_x4_file, "--out", half, "--steps", 10, *common)[0] == 0
    code, _, err = run(capsys, "train", names_x4_file, "--resume", half, "--steps", 20, "--quiet")
    assert code == 0, err
    a, b = checkpoint.load(full), checkpoint.load(half)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert np.array_equal(a.train_losses, b.train_losses)
    assert np.array_equal(a.val_losses, b.val_losses)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["lines", "stream"])
@pytest.mark.parametrize("split", [6, 7])  # on an evaluation step (every 3), and between two (like Ctrl-C)
def test_resume_is_bit_for_bit(tmp_path, capsys, monkeypatch, good, cell, mode, split):
    text = good / ("names.txt" if mode == "lines" else "prose.txt")
    if split % 3:  # every evaluation a plateau, so an extra one that counted would cut the rate (x0.1)
        monkeypatch.setattr(Trainer, "evaluate", lambda self, params=None: 2.0)
    common = ["--mode", mode, "--cell", cell, "--hidden-size", "12", "--layers", "2", "--dropout", "0.2",
              "--seq-len", "16", "--batch-size", "4", "--eval-every", "3", "--lr-plateau", "0.1", "--quiet"]
    whole, halves = tmp_path / "whole.npz", tmp_path / "halves.npz"
    assert run(capsys, "train", text, "--out", whole, "--steps", "12", *common)[0] == 0
    assert run(capsys, "train", text, "--out", halves, "--steps", str(split), *common)[0] == 0
    code, _, err = run(capsys, "train", text, "--resume", halves, "--steps", "12", "--quiet")
    assert code == 0, err
    a, b = arrays_of(whole), arrays_of(halves)
    assert set(a) == set(b)
    # the extra evaluation at a split between scheduled ones is in the history and may pick other
    # best weights; everything that steers training must be identical
    kept = ("param", "opt", "state", "line_hashes") + (("best", "history") if split % 3 == 0 else ())
    compared = [k for k in a if k.split(".")[0] in kept]
    assert any(k.startswith("opt.") for k in compared) and any(k.startswith("param.") for k in compared)
    for k in compared:
        assert np.array_equal(a[k], b[k]), k
    ma, mb = (json.loads(x["meta"].tobytes()) for x in (a, b))
    for key in ("progress", "corpus") + (("best_val_loss",) if split % 3 == 0 else ()):
        assert ma[key] == mb[key], key


def test_resume_may_change_the_stopping_options(tmp_path, capsys, names_x4_file):
    ckpt = tmp_path / "m.npz"
    assert run(capsys, "train", names_x4_file, "--out", ckpt, "--time", "0.01", *TINY_H16_12STEPS[:4],
               "--quiet")[0] == 0
    code, _, err = run(capsys, "train", names_x4_file, "--resume", ckpt, "--time", "0.02", "--patience", "9", "--quiet")
    assert code == 0, err
    assert checkpoint.load(ckpt).meta.train.patience == 9


def test_cannot_change_the_model_when_resuming(tmp_path, capsys, good):
    ck = tmp_path / "r.npz"
    ck.write_bytes((good / "names.npz").read_bytes())
    code, _, err = run(capsys, "train", good / "names.txt", "--resume", ck, "--hidden-size", "32")
    assert error_line(code, err) == ("Error: --hidden-size cannot change when resuming (the checkpoint has 8); "
                                     "train a new model instead")
    assert ck.read_bytes() == (good / "names.npz").read_bytes()


@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_resume_on_a_much_shorter_text(tmp_path, capsys, mode):
    long, short = tmp_path / "long.txt", tmp_path / "short.txt"
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), rng.integers(3, 9))) for _ in range(300)]
    long.write_text("\n".join(words) + "\n" if mode == "lines" else " ".join(words) * 3)
    short.write_text("\n".join(words[:5]) + "\n" if mode == "lines" else " ".join(words[:20]))
    ck = tmp_path / "m.npz"
    common = ["--mode", mode, "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--eval-every", "10",
              "--quiet"]
    assert run(capsys, "train", long, "--out", ck, "--steps", "20", *common)[0] == 0
    code, _, err = run(capsys, "train", short, "--resume", ck, "--steps", "25", "--quiet")
    assert code == 0, err
    assert "this text differs from the one the checkpoint was trained on" in err
    assert checkpoint.load(ck).meta.progress.step == 25


# ---------------------------------------------------------------- a diverging loss keeps the last good checkpoint


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, names_x3_file):
    ck = tmp_path / "m.npz"
    assert run(capsys, "train", names_x3_file, "--out", ck, *TINY_H8_4STEPS)[0] == 0
    before = ck.read_bytes()
    # a huge step overflows float32 at once; the evaluation right after it must not be saved
    code, _, err = run(capsys, "train", names_x3_file, "--resume", ck, "--lr", "1e39", "--clip", "0", "--steps", "50",
                       "--eval-every", "1", "--quiet")
    line = error_line(code, err)
    assert "NaN or infinite" in line or "the loss became" in line, line
    assert "the checkpoint keeps the last good state" in line
    assert ck.read_bytes() == before
    assert checkpoint.load(ck).meta.progress.step == 4


def test_nan_loss_mid_run_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch, names_x3_file):
    from charrnn import model

    ck = tmp_path / "m.npz"
    real = model.loss_and_grads
    calls = [0]

    def nan_at_step_7(*a, **k):
        calls[0] += 1
        loss, grads, state = real(*a, **k)
        return (float("nan") if calls[0] == 7 else loss), grads, state

    monkeypatch.setattr(model, "loss_and_grads", nan_at_step_7)
    code, _, err = run(capsys, "train", names_x3_file, "--out", ck, "--hidden-size", "8", "--steps", "20",
                       "--eval-every", "3", "--quiet")
    assert error_line(code, err) == ("Error: the loss became nan at step 7; the checkpoint keeps the last good "
                                     "state: try a lower --lr or a smaller --clip")
    assert checkpoint.load(ck).meta.progress.step == 6


# ---------------------------------------------------------------- fine-tuning and resuming on another text

WORDS = "\n".join(["stone", "water", "winter", "tower", "river", "letter", "better", "summer", "wonder", "silver"] * 4)


def test_init_from_fine_tunes_on_a_new_text(tmp_path, capsys, names_x4_file):
    """--init-from: the checkpoint's weights and vocabulary, the new text's validation, a fresh
    optimizer; eval on the new text improves and samples change."""
    words = tmp_path / "words.txt"
    words.write_text(WORDS + "\n")
    base, tuned = tmp_path / "names.npz", tmp_path / "tuned.npz"
    assert run(capsys, "train", names_x4_file, "--out", base, *TINY_H16_12STEPS)[0] == 0
    code, _, err = run(capsys, "train", words, "--init-from", base, "--out", tuned, "--steps", "60", "--eval-every",
                       "20", "--lr", "0.01", "--quiet")
    assert code == 0 and "starting from the weights and vocabulary of" in err, err
    ck_base, ck = checkpoint.load(base), checkpoint.load(tuned)
    assert ck.vocab == ck_base.vocab and ck.cfg == ck_base.cfg and ck.meta.source == "words.txt"
    assert ck.meta.progress.step == 60 and ck.meta.corpus.chars == len(WORDS) + 1
    before = json.loads(run(capsys, "eval", base, words, "--json")[1])["loss"]
    after = json.loads(run(capsys, "eval", tuned, words, "--json")[1])["loss"]
    assert after < before - 0.3, (before, after)
    samples = [run(capsys, "sample", f, "-n", "5", "--seed", "1", "--allow-seen")[1] for f in (base, tuned)]
    assert samples[0] != samples[1]
    code, _, err = run(capsys, "train", words, "--init-from", base, "--out", tmp_path / "x.npz",
                       "--hidden-size", "32")
    assert "--hidden-size cannot change with --init-from" in error_line(code, err)


def test_resume_keeps_the_stop_limits_and_a_new_text_starts_its_own_validation(tmp_path, capsys, names_x4_file):
    ckpt = tmp_path / "m.npz"
    assert run(capsys, "train", names_x4_file, "--out", ckpt, "--steps", "6", "--time", "5", "--epochs", "40",
               *TINY_H16_12STEPS[:4], "--eval-every", "3", "--quiet")[0] == 0
    assert run(capsys, "train", names_x4_file, "--resume", ckpt, "--steps", "9", "--quiet")[0] == 0
    train = checkpoint.load(ckpt).meta.train
    assert (train.time_minutes, train.epochs, train.steps) == (5.0, 40.0, 9)  # kept unless given again
    words = tmp_path / "words.txt"
    words.write_text("\n".join(["anna", "nina", "bob", "dina", "lena", "kai", "ivo", "gus"] * 5) + "\n")
    code, _, err = run(capsys, "train", words, "--resume", ckpt, "--steps", "12", "--quiet")
    assert code == 0 and "judged on its own validation set" in err
    ck = checkpoint.load(ckpt)
    assert ck.meta.source == "words.txt" and [s for s, _ in ck.val_losses] == [12]  # only evaluations on words


# ---------------------------------------------------------------- pacing and the progress bar


def test_pace_fits_about_fifteen_evaluations_in_the_time_budget():
    tr = small_trainer(TEN_NAMES_X3, "lines")
    tr.cfg.time_minutes, tr.auto_eval_every = 0.5, 200
    tr.pace(seconds_per_step=0.1)  # 300 steps fit in 30 s
    assert tr.cfg.eval_every == 20
    tr.pace(seconds_per_step=0.1, seconds_per_eval=1)  # 7.5 evaluations take a quarter: 225 steps are left
    assert tr.cfg.eval_every == 40  # 30 each, as a whole multiple of 20: evaluations stay evenly spaced
    tr.pace(seconds_per_step=0.1, seconds_per_eval=0.01)  # cheaper than thought: the spacing stays
    assert tr.cfg.eval_every == 40
    tr.pace(seconds_per_step=0.0001)  # never more steps between evaluations than the automatic value
    assert tr.cfg.eval_every == 200


def test_a_short_timed_run_evaluates_as_it_goes(tmp_path, capsys, monkeypatch, names_x4_file):
    slow_step = Trainer.train_step

    def step(self):
        time.sleep(0.01)
        return slow_step(self)

    monkeypatch.setattr(Trainer, "train_step", step)
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", names_x4_file, "--out", out, "--hidden-size", "8", "--time", "0.03", "-q")
    assert code == 0, err
    ck = checkpoint.load(out)
    assert len(ck.val_losses) >= 5 and ck.meta.train.eval_every < 200  # it was one, at the end


@pytest.mark.parametrize("args, limit, until_patience", [
    (["--steps", "30"], 30, False),
    (["--epochs", "2"], 2 * 1, False),  # 43 training lines, batch 64: one batch per epoch
    ([], None, True),  # the automatic 30 epochs behind --patience 5: no false end
])
def test_the_bar_counts_towards_the_limit_that_stops_the_run(names_x4_file, args, limit, until_patience):
    import typer

    from charrnn.cli import app
    from charrnn.commands import TrainDisplay, make_trainer

    ctx = typer.main.get_command(app).commands["train"].make_context("train", [str(names_x4_file), *args])
    explicit = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
    trainer, chosen, _ = make_trainer(ctx.params, explicit, names_x4_file.read_text(), None)
    display = TrainDisplay(trainer, names_x4_file.with_suffix(".npz"), quiet=True, chosen=chosen)
    assert (display.limit, display.until_patience) == (limit, until_patience)
@pytest.mark.parametrize("optimizer, mode, lr", [("sgd", "lines", 1.0), ("adagrad", "lines", 0.1),
                                                 ("adagrad", "stream", 0.03), ("adam", "stream", 2e-3)])
def test_each_optimizer_gets_its_own_automatic_learning_rate(tmp_path, names_x4_file, capsys, optimizer, mode, lr):
    """#19 item 5: SGD used to take Adam's 0.003 (and barely learnt) while the summary called it automatic."""
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", names_x4_file, "--out", out, "--optimizer", optimizer, "--mode", mode,
                       "--seq-len", "8", "--hidden-size", "8", "--steps", "1", "-q")
    assert code == 0, err
    assert checkpoint.load(out).meta.train.lr == lr
    code, _, err = run(capsys, "train", names_x4_file, "--out", out, "--force", "--optimizer", optimizer,
                       "--lr", "0.5", "--steps", "1", "--hidden-size", "8", "-q")
    assert code == 0, err
    assert checkpoint.load(out).meta.train.lr == 0.5  # what the user asks for wins


def test_ctrl_c_before_the_first_step_shows_no_training_loss(tmp_path, capsys, names_x4_file, monkeypatch):
    """Ctrl-C while the run starts (loading the compiled kernels takes a second) stops at step 0:
    the last line has no training loss to show, and must not say nan or warn of an empty mean."""
    fit = Trainer.fit

    def interrupted_at_once(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # caught by train's handler: stop before the first step
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", interrupted_at_once)
    ck = tmp_path / "m.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Mean of empty slice" was a RuntimeWarning
        rc, _, err = run(capsys, "train", names_x4_file, "--out", ck, "--hidden-size", "8", "--steps", "5")
    assert rc == 130, err
    line = next(s for s in err.splitlines() if s.startswith("step"))
    assert line.split()[:4] == ["step", "0", "train", "–"], line
    assert "nan" not in err
    assert checkpoint.load(ck).meta.progress.step == 0


def test_only_an_evaluation_that_gives_the_best_weights_says_best(tmp_path, capsys, names_x4_file, monkeypatch):
    """The extra evaluation when a run stops between two scheduled ones leaves the patience count
    alone; it said "best" after a scheduled best even when its own loss was worse."""
    losses = iter([2.0, 1.5, 1.7])
    monkeypatch.setattr(Trainer, "evaluate", lambda self, params=None: next(losses))
    rc, _, err = run(capsys, "train", names_x4_file, "--out", tmp_path / "m.npz", "--hidden-size", "8",
                     "--steps", "5", "--eval-every", "2")
    assert rc == 0, err
    lines = {int(s.split()[1]): s for s in err.splitlines() if s.startswith("step")}
    assert "val 2.0000 best" in lines[2] and "val 1.5000 best" in lines[4]
    assert "val 1.7000" in lines[5] and "best" not in lines[5], lines[5]
