"""An experiment for #17 (not used by charrnn): the recurrent product the other way round.

    python benchmarks/orientation.py --threads 1   # ~1 minute
    python benchmarks/orientation.py --threads 2

The forward loop computes s = h_{t-1} W_h, (B, H) @ (H, G), at every time step. Row-major NumPy
hands OpenBLAS the column-major product s^T = W_h^T h^T, whose first dimension is G (1,024 for
LSTM-256) and whose last is B (32). The same numbers come out of (W_h^T) @ (h^T), (G, H) @ (H, B),
with W_h^T and h^T stored contiguously: OpenBLAS then sees B as the first dimension, a shape it
handles faster on some processors. The cell's kernel must then read s^T column by column (a
gather), and write h_t twice (as a row for the history, as a column for the next product).

This times, for the numba LSTM (charrnn/fast.py), alternating in one process, medians:
  product: the 64 products of one batch alone, each orientation;
  forward: fast.lstm_forward against the same loop with the transposed product and a kernel that
           gathers s^T and writes h_t^T (checked to give the same hidden states first).
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
from numba import njit  # noqa: E402

from charrnn import fast  # noqa: E402
from charrnn.cells import Trace, _with_h0  # noqa: E402
from charrnn.fast import FASTMATH, kernel, sigmoid, tanh  # noqa: E402

B, T = 32, 64


@njit(fastmath=FASTMATH, inline="always")
def activate_row(gate, c_prev_b, c_b, tc_b, h_b):
    """fast.lstm_forward_step's work on one row, once z = a + s is in `gate` (4H,)."""
    H = len(c_b)
    for j in range(3 * H):
        gate[j] = sigmoid(gate[j])
    for j in range(3 * H, 4 * H):
        gate[j] = tanh(gate[j])
    i, f, o, g = gate[:H], gate[H : 2 * H], gate[2 * H : 3 * H], gate[3 * H :]
    for j in range(H):
        c_t = f[j] * c_prev_b[j] + i[j] * g[j]
        tc_t = tanh(c_t)
        c_b[j], tc_b[j], h_b[j] = c_t, tc_t, o[j] * tc_t


@njit(inline="always")
def write_transposed(h, hT):
    for j in range(h.shape[1]):
        for b in range(h.shape[0]):
            hT[j, b] = h[b, j]


@kernel
def lstm_step_transposed(a, sT, c_prev, gates, c, tc, h, hT):
    """fast.lstm_forward_step with s given as s^T (G, B); also writes h_t^T (H, B)."""
    B, G = gates.shape
    for b in range(B):
        z, gate = a[b], gates[b]
        for j in range(G):  # the gather: one column of s^T
            gate[j] = z[j] + sT[j, b]
        activate_row(gate, c_prev[b], c[b], tc[b], h[b])
    write_transposed(h, hT)


@kernel
def lstm_step_tiled(a, sT, c_prev, gates, c, tc, h, hT):
    """lstm_step_transposed with the gather in tiles of 16 gate columns for all rows: the tile of
    s^T (16 rows of B) stays in L1 while each row reads one cache line of a and writes one of gates."""
    B, G = gates.shape
    for j0 in range(0, G, 16):
        for b in range(B):
            for j in range(j0, min(j0 + 16, G)):
                gates[b, j] = a[b, j] + sT[j, b]
    for b in range(B):
        activate_row(gates[b], c_prev[b], c[b], tc[b], h[b])
    write_transposed(h, hT)


def lstm_forward_transposed(A, W_h, h0, c0, step=lstm_step_transposed):
    T, B, G = A.shape
    H = G // 4
    Hs0, Cs0 = _with_h0(h0, T), _with_h0(c0, T)
    TCs = np.empty((T, B, H), dtype=A.dtype)
    W_hT, hT = np.ascontiguousarray(W_h.T), np.ascontiguousarray(h0.T)  # (G, H), (H, B)
    sT = np.empty((G, B), dtype=A.dtype)
    gates = np.empty_like(A)
    for t in range(T):
        np.matmul(W_hT, hT, out=sT)  # (G, B) = (h_{t-1} W_h)^T
        step(A[t], sT, Cs0[t], gates[t], Cs0[t + 1], TCs[t], Hs0[t + 1], hT)
    return Hs0[1:], (Hs0[-1], Cs0[-1]), Trace("lstm", Hs0, W_h, gates=gates, Cs0=Cs0, TCs=TCs)


def ms(f, repeats: int = 5) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        f()
    return 1e3 * (time.perf_counter() - t0) / repeats


def measure(H: int, reps: int, rng: np.random.Generator) -> dict[str, float]:
    """Median ms per batch of each way, alternating."""
    A = rng.standard_normal((T, B, 4 * H)).astype(np.float32)
    W = (0.05 * rng.standard_normal((H, 4 * H))).astype(np.float32)
    h0 = (0.1 * rng.standard_normal((B, H))).astype(np.float32)
    c0 = h0.copy()
    ours, theirs = fast.lstm_forward(A, W, h0, c0)[0], lstm_forward_transposed(A, W, h0, c0)[0]
    tiled = lstm_forward_transposed(A, W, h0, c0, lstm_step_tiled)[0]
    for other in (theirs, tiled):
        assert np.allclose(ours, other, rtol=1e-5, atol=1e-6), "a transposed forward differs"
    WT, hT = np.ascontiguousarray(W.T), np.ascontiguousarray(h0.T)
    s, sT = np.empty((B, 4 * H), np.float32), np.empty((4 * H, B), np.float32)

    def plain() -> None:
        for _ in range(T):
            np.matmul(h0, W, out=s)

    def flipped() -> None:
        for _ in range(T):
            np.matmul(WT, hT, out=sT)

    runs = {"plain": plain, "flipped": flipped,
            "forward": lambda: fast.lstm_forward(A, W, h0, c0),
            "transposed": lambda: lstm_forward_transposed(A, W, h0, c0),
            "tiled": lambda: lstm_forward_transposed(A, W, h0, c0, lstm_step_tiled)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, f in runs.items():
            times[k].append(ms(f))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=bench.THREADS, help="BLAS threads [default: all cores]")
    ap.add_argument("--hidden", default="256,512", help="LSTM sizes, comma separated")
    ap.add_argument("--reps", type=int, default=9, help="alternating blocks")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"LSTM, B {B}, T {T}, float32, {bench.THREADS} BLAS thread(s); ms per batch, median of {args.reps}")
    print(f"{'H':>5}{'product h@W':>13}{'W^T@h^T':>10}{'forward':>10}{'transposed':>12}{'ratio':>7}"
          f"{'tiled':>8}{'ratio':>7}")
    for H in map(int, args.hidden.split(",")):
        m = measure(H, args.reps, rng)
        print(f"{H:>5}{m['plain']:>13.2f}{m['flipped']:>10.2f}{m['forward']:>10.2f}{m['transposed']:>12.2f}"
              f"{m['forward'] / m['transposed']:>7.2f}{m['tiled']:>8.2f}{m['forward'] / m['tiled']:>7.2f}")


if __name__ == "__main__":
    main()
