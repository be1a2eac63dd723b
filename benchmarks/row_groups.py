"""An experiment for #17 (not used by charrnn): on N threads, run the batch as N groups of rows,
each group's whole time loop in its own Python thread on one BLAS thread, instead of one loop
whose small products each use N BLAS threads.

    pip install numba torch  # only numba is needed here
    OPENBLAS_THREAD_TIMEOUT=4 python benchmarks/row_groups.py --threads 2   # what could win
    python benchmarks/row_groups.py --threads 2                             # OpenBLAS as it comes
    python benchmarks/row_groups.py --check     # the groups' results against the whole batch's

The rows of a batch never meet inside a cell, and the compiled cells (charrnn/fast.py) leave one
matrix product and one nogil kernel per time step, so two threads should overlap with little GIL
hand-off. Each group runs `fast.forward` / `fast.backward` on its rows (its weight gradient
included); the groups' results are put side by side (dW_h summed). Training chars/s of
`bench.CharrnnRun` (B 32, T 64, 1 layer, Adam) alternate between the whole batch on N BLAS
threads and the row groups (`bench.alternate`, blocks of ~1 s), medians.

OPENBLAS_THREAD_TIMEOUT matters: after a product on N threads OpenBLAS's worker threads spin for
2^28 cycles (~0.1 s) before they sleep, so the groups that follow the output layer's product
share their cores with spinning workers. 4 (the least) lets them sleep at once, but then every
product on N threads pays to wake them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (sets the BLAS threads before numpy loads)
import numpy as np  # noqa: E402
from backends import find_openblas_setter  # noqa: E402

from charrnn import backend, fast  # noqa: E402
from charrnn.data import make_corpus  # noqa: E402

ARRAYS = ("Hs0", "gates", "Cs0", "TCs", "S")  # the Trace fields with a batch axis (axis 1)


def split_cells(threads: int):
    """forward and backward with the signatures of fast.forward / fast.backward, on row groups."""
    set_threads = find_openblas_setter()
    pool = ThreadPoolExecutor(threads)
    one_forward, one_backward = fast.forward, fast.backward  # each group's (main swaps fast's own)

    def groups(B: int) -> list[slice]:
        edges = [B * k // threads for k in range(threads + 1)]
        return [slice(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]

    def in_groups(work, B):
        set_threads(1)
        try:
            return list(pool.map(work, groups(B)))
        finally:
            set_threads(threads)

    def forward(cell, A, W_h, h0, c0=None, activation="tanh"):
        parts = in_groups(lambda r: one_forward(cell, A[:, r], W_h, h0[r], None if c0 is None else c0[r],
                                                activation), A.shape[1])
        Hs = np.concatenate([p[0] for p in parts], axis=1)  # (T, B, H)
        final = tuple(np.concatenate(s, axis=0) for s in zip(*(p[1] for p in parts), strict=True))
        joined = {f: np.concatenate([getattr(p[2], f) for p in parts], axis=1)
                  for f in ARRAYS if getattr(parts[0][2], f) is not None}
        return Hs, final, replace(parts[0][2], **joined)

    def backward(dH, trace):
        def rows(r):
            part = replace(trace, **{f.name: getattr(trace, f.name)[:, r] for f in fields(trace)
                                     if f.name in ARRAYS and getattr(trace, f.name) is not None})
            return one_backward(np.ascontiguousarray(dH[:, r]), part)
        parts = in_groups(rows, dH.shape[1])
        dA = np.concatenate([p[0] for p in parts], axis=1)
        dW_h = sum(p[1] for p in parts[1:]) + parts[0][1]
        dstate = tuple(np.concatenate(s, axis=0) for s in zip(*(p[2] for p in parts), strict=True))
        return dA, dW_h, dstate

    return forward, backward


def check(threads: int) -> None:
    """Every output and gradient of each cell, row groups against the whole batch (float32)."""
    forward, backward = split_cells(threads)
    rng = np.random.default_rng(0)
    worst = 0.0
    for cell, activation in (("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")):
        T, B, H = 7, 6, 16
        G = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * H
        A = rng.standard_normal((T, B, G)).astype(np.float32)
        W_h = (rng.standard_normal((H, G)) / 4).astype(np.float32)
        h0, c0 = rng.standard_normal((2, B, H)).astype(np.float32)
        dH = rng.standard_normal((T, B, H)).astype(np.float32)
        c0_ = c0 if cell == "lstm" else None
        out = []
        for f, b in ((fast.forward, fast.backward), (forward, backward)):
            Hs, final, trace = f(cell, A.copy(), W_h, h0, c0_, activation)
            out.append([Hs, *final, *b(dH.copy(), trace)[:2]])
        worst = max(worst, *(float(np.abs(x - y).max()) for x, y in zip(*out, strict=True)))
    print(f"largest difference, row groups against the whole batch: {worst:.1e}")
    assert worst < 1e-5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the groups' results")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="lstm-256,gru-256,rnn-256,lstm-128,lstm-512")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    if a.check:
        check(a.threads)
        return
    corpus = make_corpus(bench.DATA.read_text()[:2_000_000], mode="stream", val_fraction=0.0)
    whole = fast.forward, fast.backward
    split = split_cells(a.threads)
    for config in a.configs.split(","):
        cell, hidden = config.split("-")
        run = bench.CharrnnRun(cell, int(hidden), corpus)

        def on(cells_to_use, run=run):
            def step():
                fast.forward, fast.backward = cells_to_use  # cells.forward / backward call these on numba
                return run.train_step()
            return step

        backend.use("numba")
        steps = max(2, int(1.0 / bench.time_block(run.train_step, 1)))  # blocks of ~1 s
        rates = bench.alternate({"whole": ("numba", on(whole)), "groups": ("numba", on(split))}, a.reps, steps)
        fast.forward, fast.backward = whole
        w, g = statistics.median(rates["whole"]), statistics.median(rates["groups"])
        print(f"{config}: whole batch {w:,.0f} chars/s, {a.threads} row groups {g:,.0f} chars/s: {g / w:.2f}x",
              flush=True)

if __name__ == "__main__":
    main()
