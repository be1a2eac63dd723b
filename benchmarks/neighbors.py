"""An experiment for #14: fill names by predicting each character from its neighbours' states.

    python benchmarks/neighbors.py --check            # finite-difference check of the gradients (float64)
    python benchmarks/neighbors.py --minutes 5        # train, then fill one blank in each test name
    python benchmarks/neighbors.py --minutes 5 --head 256 --dropout 0.3 --mask-rate 0.05 --anneal

--head Z puts a tanh layer of width Z between [h→_{t-1} ; h←_{t+1}] and the output, so that the
two sides can interact (without it the log-probabilities are a sum of a left and a right term);
--anneal lets the learning rate fall linearly to 5 % over the run.

charrnn's bidirectional model predicts position t from [h→_t ; h←_t] with the character at t hidden
by <MASK>, so only the ~15 % of hidden positions are training targets. This script keeps the same
1-layer model and the same batches (lines, <MASK> spans at --mask-rate), but predicts position t from
[h→_{t-1} ; h←_{t+1}]: the left-to-right cell has read up to t - 1 and the right-to-left cell down to
t + 1, so the character at t is never seen and *every* character of every line is a target. A
single blank is then filled exactly as trained. <MASK> inputs stay in training so that several blanks
(and the neighbours of a blank) can be hidden. With more than one layer this needs one stack per
direction (an upper layer reading [h→; h←] of the layer below would see t); one layer needs nothing new.

Fill accuracy uses the split and blank positions of benchmarks/fill_quality.py (1,000 held-out
names, seed 3407; one random position each, numpy seed 0), so its figure sits beside that script's.
Not part of charrnn: if it wins, the objective belongs in the model and the CLI (see #14).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

from charrnn import backend, model, optim
from charrnn.config import Mode, ModelConfig
from charrnn.data import Batches, hide, make_corpus, sequences
from charrnn.vocab import EOS, UNK

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shifted(top: np.ndarray, H: int) -> np.ndarray:
    """[h→_{t-1} ; h←_{t+1}] at each t from top = [h→_t ; h←_t] (T, B, 2H); zeros past either end."""
    s = np.zeros_like(top)
    s[1:, :, :H] = top[:-1, :, :H]
    s[:-1, :, H:] = top[1:, :, H:]
    return s


def unshifted(ds: np.ndarray, H: int) -> np.ndarray:
    """The gradient w.r.t. top from the gradient w.r.t. shifted(top): the shift's transpose."""
    d = np.zeros_like(ds)
    d[:-1, :, :H] = ds[1:, :, :H]
    d[1:, :, H:] = ds[:-1, :, H:]
    return d


def head(params, s):
    """z = tanh(s W_z + b_z) when the model has a head (lets the two sides interact), else s."""
    if "W_z" not in params:
        return s
    return np.tanh(s @ params["W_z"] + params["b_z"])


def layers(params, cfg, x, dropout_rng=None, lengths=None):
    """model.forward for the recurrent layers only (its output layer gets a 1-column dummy)."""
    dummy = {"W_y": np.zeros((2 * cfg.hidden_size, 1), params["W_y"].dtype), "b_y": np.zeros(1, params["W_y"].dtype)}
    return model.forward({**params, **dummy}, cfg, x, None, dropout_rng, lengths=lengths)


def loss_and_grads(params, cfg, x, y, weights, lengths, dropout_rng=None):
    H = cfg.hidden_size
    fwd = layers(params, cfg, x, dropout_rng, lengths)
    T, B, _ = fwd.top.shape
    s = shifted(fwd.top, H).reshape(T * B, 2 * H)
    z = head(params, s)
    logits = (z @ params["W_y"]).reshape(T, B, -1)
    logits += params["b_y"]
    loss, dlogits, _ = model.cross_entropy(logits, y, weights)
    dlog = dlogits.reshape(T * B, -1)
    grads = {"W_y": z.T @ dlog, "b_y": dlog.sum(axis=0)}
    dz = dlog @ params["W_y"].T
    if "W_z" in params:
        dz *= 1 - z * z  # through tanh
        grads["W_z"], grads["b_z"] = s.T @ dz, dz.sum(axis=0)
        dz = dz @ params["W_z"].T
    dtop = unshifted(dz.reshape(T, B, 2 * H), H)
    for k, run in enumerate(fwd.layers):  # one level: the left-to-right layer, then the right-to-left one
        part = np.ascontiguousarray(dtop[..., k * H : (k + 1) * H])
        layer_grads, _, _ = model.layer_backward(run, params, part)
        grads.update(layer_grads)
    return loss, grads


def masked_inputs(batch, V, rate, rng):
    seq, lengths, candidates = sequences(batch, Mode.LINES)
    x = np.where(hide(candidates, rate, rng), V, seq).astype(np.int32)  # <MASK> is id V
    return x, seq.astype(np.int32), candidates.astype(np.float32), lengths


def add_head(params, Z, V, rng):
    H2 = params["W_y"].shape[0]
    dt = params["W_y"].dtype
    params["W_z"] = (rng.standard_normal((H2, Z)) / np.sqrt(H2)).astype(dt)
    params["b_z"] = np.zeros(Z, dtype=dt)
    params["W_y"] = (rng.standard_normal((Z, V)) / np.sqrt(Z) * 0.1).astype(dt)


def check() -> None:
    rng = np.random.default_rng(0)
    cfg = ModelConfig(7, "lstm", 5, layers=1, dtype="float64", bidirectional=True)
    params = model.init_params(cfg, rng)
    add_head(params, 6, 7, rng)
    T, B = 6, 3
    x = rng.integers(0, 8, (T, B)).astype(np.int32)
    y = rng.integers(0, 7, (T, B)).astype(np.int32)
    w = (rng.random((T, B)) < 0.7).astype(np.float64)
    lengths = np.array([6, 4, 5])
    w[np.arange(T)[:, None] >= lengths[None, :]] = 0
    _, grads = loss_and_grads(params, cfg, x, y, w, lengths)
    worst = 0.0
    for name, p in params.items():
        for i in rng.choice(p.size, size=min(p.size, 8), replace=False):
            old = p.flat[i]
            p.flat[i] = old + 1e-6
            up = loss_and_grads(params, cfg, x, y, w, lengths)[0]
            p.flat[i] = old - 1e-6
            down = loss_and_grads(params, cfg, x, y, w, lengths)[0]
            p.flat[i] = old
            num = (up - down) / 2e-6
            worst = max(worst, abs(num - grads[name].flat[i]) / (1e-4 + abs(num)))  # round-off: ~1e-6
    print(f"largest error of {len(params)} parameters' gradients, relative to 1e-4 + |numeric|: {worst:.2e}")
    assert worst < 1e-5


def fill_accuracy(params, cfg, vocab, test: list[str]) -> float:
    rng = np.random.default_rng(0)
    positions = [int(rng.integers(len(n))) for n in test]  # the positions of fill_quality.py
    V, H = len(vocab), cfg.hidden_size
    rows = [np.r_[EOS, vocab.encode(n)[0], EOS] for n in test]
    T = max(len(r) for r in rows)
    x = np.full((T, len(rows)), EOS, dtype=np.int32)
    for b, (r, p) in enumerate(zip(rows, positions, strict=True)):
        x[: len(r), b] = r
        x[p + 1, b] = V  # the blank (never read by the positions that predict it)
    lengths = np.array([len(r) for r in rows])
    top = layers(params, cfg, x, lengths=lengths).top
    s = shifted(top, H)[np.array(positions) + 1, np.arange(len(rows))]  # (N, 2H)
    logits = head(params, s) @ params["W_y"] + params["b_y"]
    logits[:, [UNK, EOS]] = -np.inf  # a blank is a character
    got = logits.argmax(axis=1)
    truth = np.array([vocab.encode(n[p])[0][0] for n, p in zip(test, positions, strict=True)])
    return float((got == truth).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only the gradient check")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--mask-rate", type=float, default=0.15)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--anneal", action="store_true", help="learning rate falls linearly to 5 %% over the time")
    ap.add_argument("--head", type=int, default=0, help="width of a tanh layer on [h->_{t-1}; h<-_{t+1}] (0: none)")
    ap.add_argument("--backend", choices=["numpy", "numba"], default=None, help="default: numba when it imports")
    a = ap.parse_args()
    print(f"backend: {backend.describe(backend.use(a.backend))}", flush=True)
    if a.check:
        check()
        return
    words = (DATA / "names.txt").read_text().split()
    order = list(range(len(words)))
    random.Random(3407).shuffle(order)
    test, train = [words[i] for i in order[:1000]], [words[i] for i in order[1000:]]
    corpus = make_corpus("\n".join(train) + "\n", mode="lines", val_fraction=0.0)
    V = len(corpus.vocab)
    cfg = ModelConfig(V, "lstm", a.hidden, layers=1, dropout=a.dropout, bidirectional=True)
    params = model.init_params(cfg, np.random.default_rng(0))
    if a.head:
        add_head(params, a.head, V, np.random.default_rng(4))
    opt = optim.init_state("adam", params)
    batches = Batches(corpus, 64, 64, seed=0)
    rng, drop_rng = np.random.default_rng(1), np.random.default_rng(2)
    t0, step, epoch, pos, losses = time.perf_counter(), 0, 0, 0, []
    while time.perf_counter() - t0 < a.minutes * 60:
        x, y, w, lengths = masked_inputs(batches.get(epoch, pos), V, a.mask_rate, rng)
        pos = (pos + 1) % batches.per_epoch
        epoch += pos == 0
        loss, grads = loss_and_grads(params, cfg, x, y, w, lengths, drop_rng if a.dropout else None)
        optim.clip_(grads, 5.0)
        done = (time.perf_counter() - t0) / (a.minutes * 60)
        optim.step_("adam", params, grads, opt, a.lr * max(0.05, 1 - done) if a.anneal else a.lr)
        losses.append(loss)
        step += 1
        if step % 200 == 0:
            print(f"step {step}: train {np.mean(losses[-200:]):.4f} nats per character", flush=True)
    acc = fill_accuracy(params, cfg, corpus.vocab, test)
    print(f"{step} steps in {a.minutes:g} min ({epoch} epochs); fill accuracy, one blank per test name: {acc:.1%}")


if __name__ == "__main__":
    main()
