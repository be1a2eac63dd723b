"""An experiment for #17 (not used by charrnn): how fast can one-stream sampling get in NumPy?

    python benchmarks/sample_step.py --threads 1  # GRU-256 and RNN-256 against PyTorch, ~1 minute
    python benchmarks/sample_step.py --check      # the lean steps' logits against model.Stepper's

Sampling one stream costs per character one (1, H) @ (H, G) product, the cell's element-wise
work on (1, G) rows, the output layer and the choice. At one row every NumPy call costs about
a microsecond whatever it computes, so the calls, not the arithmetic, are most of the cell.
`model.Stepper` already makes its arrays and gate views once (`cells.Step`). `LeanStep` is the
leanest step NumPy allows for the GRU and the vanilla RNN, a ceiling for any NumPy sampler: also
the bias folded into the input table, no function calls inside the cell and every operation a
ufunc with `out=`. It computes exactly what `model.Stepper` computes (`--check`:
bit-identical logits, float32). The loops alternate `model.Stepper`, `LeanStep` and PyTorch's
one-step `nn.GRU` / `nn.RNN` + `nn.Linear` + softmax + multinomial (as `bench.py` times it),
each choice by `sample.pick` for charrnn; medians of the blocks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (sets the BLAS threads before numpy loads)
import numpy as np  # noqa: E402

from charrnn import model, sample  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402

V = 65  # tiny-shakespeare's characters


class LeanStep:
    """model.Stepper for one layer, B rows, GRU or tanh RNN, with nothing made per call."""

    def __init__(self, params: model.Params, cfg: ModelConfig, B: int, banned: list[int]) -> None:
        H, dt = cfg.hidden_size, np.dtype(cfg.dtype)
        self.cell = cfg.cell
        self.table = params["W_x0"] + params["b0"]  # (V, G): x W_x + b for each one-hot x
        self.W_h, self.W_y = params["W_h0"], params["W_y"]
        self.b_y = params["b_y"].copy()
        self.b_y[banned] = -np.inf
        self.a = np.empty((B, self.table.shape[1]), dt)
        self.s = np.empty_like(self.a)
        self.tmp = np.empty((B, H), dt)
        self.h = [np.zeros((B, H), dt), np.zeros((B, H), dt)]  # h_{t-1} and h_t, swapped each step
        self.logits = np.empty((B, self.b_y.shape[0]), dt)
        a, s = self.a, self.s
        self.ru, self.r, self.u, self.n = a[:, : 2 * H], a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        self.s_ru, self.s_n = s[:, : 2 * H], s[:, 2 * H :]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        h_prev, h = self.h
        self.h = [h, h_prev]
        a, s, tmp = self.a, self.s, self.tmp
        np.take(self.table, ids, axis=0, out=a)
        np.matmul(h_prev, self.W_h, out=s)
        if self.cell == "rnn":
            np.add(a, s, out=h)
            np.tanh(h, out=h)
        else:  # cells.py's GRU, op for op
            ru, r, u, n = self.ru, self.r, self.u, self.n
            np.add(ru, self.s_ru, out=ru)
            np.multiply(ru, 0.5, out=ru)  # sigmoid(x) = (1 + tanh(x / 2)) / 2
            np.tanh(ru, out=ru)
            np.multiply(ru, 0.5, out=ru)
            np.add(ru, 0.5, out=ru)
            np.multiply(r, self.s_n, out=tmp)
            np.add(n, tmp, out=n)
            np.tanh(n, out=n)
            np.subtract(h_prev, n, out=tmp)  # h_t = n + u * (h_{t-1} - n)
            np.multiply(tmp, u, out=tmp)
            np.add(n, tmp, out=h)
        np.matmul(h, self.W_y, out=self.logits)
        np.add(self.logits, self.b_y, out=self.logits)
        return self.logits


def make(cell: str, hidden: int) -> tuple[model.Params, ModelConfig]:
    cfg = ModelConfig(V, cell, hidden, layers=1)
    params = model.init_params(cfg, np.random.default_rng(0))
    params = {k: v + np.float32(0.05) * np.random.default_rng(1).standard_normal(v.shape, np.float32)
              for k, v in params.items()}  # not the init pattern: biases that differ by gate
    return params, cfg


def check(cell: str, hidden: int = 32, steps: int = 50) -> None:
    params, cfg = make(cell, hidden)
    ref = model.Stepper(params, cfg, model.zero_state(cfg, 3), [0, 1])
    lean = LeanStep(params, cfg, 3, [0, 1])
    ids = np.array([2, 7, 11], dtype=np.int32)
    rng = np.random.default_rng(0)
    for t in range(steps):
        want, got = ref(ids), lean(ids)
        if not np.array_equal(want, got):
            ok = np.isfinite(want)  # the banned ids are -inf in both
            sys.exit(f"{cell}: step {t}: the lean step differs by {np.abs(want[ok] - got[ok]).max():.3g}")
        ids = sample.pick(want, rng).astype(np.int32)
    print(f"{cell}: {steps} steps, logits bit-identical to model.Stepper")


def per_char(step, chars: int) -> float:
    """Microseconds per character generating one stream with `step`."""
    rng = np.random.default_rng(0)
    last = np.array([3], dtype=np.int32)
    t0 = time.perf_counter()
    for _ in range(chars):
        last = sample.pick(step(last), rng)
    return 1e6 * (time.perf_counter() - t0) / chars


def torch_per_char(torch, rnn, out, chars: int) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, V)
    state = None
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(chars):
            hs, state = rnn(x, state)
            p = torch.softmax(out(hs[0, 0]), dim=-1)
            i = int(torch.multinomial(p, 1, generator=gen))
            x.zero_()
            x[0, 0, i] = 1
        return 1e6 * (time.perf_counter() - t0) / chars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check the lean steps against model.Stepper")
    ap.add_argument("--configs", default="gru-256,rnn-256", help="cell-hidden, comma separated")
    ap.add_argument("--threads", type=int, default=bench.THREADS, help="BLAS / torch threads [default: all cores]")
    ap.add_argument("--reps", type=int, default=9, help="alternating blocks")
    ap.add_argument("--chars", type=int, default=2000, help="characters a block")
    args = ap.parse_args()
    configs = [(c, int(h)) for c, h in (s.split("-") for s in args.configs.split(","))]
    for cell, _ in configs:
        check(cell)
    if args.check:
        return
    torch = bench.import_torch(True)
    print(f"one stream, {args.chars} characters a block, median of {args.reps} alternating blocks, "
          f"{bench.THREADS} thread(s); microseconds a character")
    print(f"{'model':<10}{'Stepper':>9}{'lean':>8}{'torch':>8}{'ratio':>7}{'lean ratio':>12}")
    for cell, hidden in configs:
        params, cfg = make(cell, hidden)
        stepper = model.Stepper(params, cfg, model.zero_state(cfg, 1), [0, 1])
        lean = LeanStep(params, cfg, 1, [0, 1])
        nets = None
        if torch is not None:
            torch.manual_seed(0)
            nets = ({"gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](V, hidden), torch.nn.Linear(hidden, V))
        times: dict[str, list[float]] = {"stepper": [], "lean": [], "torch": []}
        for _ in range(args.reps):
            times["stepper"].append(per_char(stepper, args.chars))
            times["lean"].append(per_char(lean, args.chars))
            if nets is not None:
                times["torch"].append(torch_per_char(torch, *nets, args.chars // 4))
        m = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
        print(f"{cell}-{hidden:<6}{m['stepper']:>9.1f}{m['lean']:>8.1f}{m['torch']:>8.1f}"
              f"{m['torch'] / m['stepper']:>7.2f}{m['torch'] / m['lean']:>12.2f}")


if __name__ == "__main__":
    main()
