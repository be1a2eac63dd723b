"""Experiment (not used by charrnn): would a compiled LSTM cell close the gap to PyTorch?
(It led to charrnn/fast.py, the optional backend, whose kernels are faster than these.)

    pip install numba torch==2.13.0
    python benchmarks/fused_lstm.py [--hidden 256,512,128] [--reps 7]

charrnn's LSTM trains at ~0.6-0.7x PyTorch (bench.py). This replaces the ~10 forward and
~14 backward NumPy elementwise passes of each time step with one numba kernel each, keeps
the matrix products in NumPy (OpenBLAS), and times training steps of the NumPy cell, the
fused cell and PyTorch alternating in one process (medians, as bench.py does).

numba's tanh is scalar libm (~30 ns a call: 1 ms for one (32, 1024) gate row), so the
kernels use a rational tanh, x P(x^2) / Q(x^2) on [-9, 9], fitted here by weighted least
squares; its float32 error is printed. error_model="numpy" lets LLVM vectorise the
division (Python's model checks every divisor for zero).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (sets the BLAS threads before numpy loads)
import numpy as np  # noqa: E402

from charrnn import cells  # noqa: E402
from charrnn.data import make_corpus  # noqa: E402


def fit_tanh(n_p: int = 5, n_q: int = 4, rounds: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (low degree first) of P and Q, Q[0] = 1, for tanh(x) ~ x P(x^2) / Q(x^2)."""
    x = np.linspace(1e-4, 9, 20_000)
    y, x2 = np.tanh(x), x * x
    M = np.stack([x * x2**k for k in range(n_p)] + [-y * x2**k for k in range(1, n_q)], 1)
    w = np.ones_like(x)
    for _ in range(rounds):  # reweight towards the worst points (a crude minimax)
        coef = np.linalg.lstsq(M * w[:, None], y * w, rcond=None)[0]
        P, Q = coef[:n_p], np.r_[1.0, coef[n_p:]]
        err = np.abs(x * np.polyval(P[::-1], x2) / np.polyval(Q[::-1], x2) - y)
        w *= 1 + 50 * err / err.max()
        w /= w.mean()
    return P, Q


def build_kernels(P: np.ndarray, Q: np.ndarray):
    from numba import njit

    p0, p1, p2, p3, p4 = (np.float32(c) for c in P)
    q0, q1, q2, q3 = (np.float32(c) for c in Q)
    lo, hi, half, one = np.float32(-9), np.float32(9), np.float32(0.5), np.float32(1)
    jit = njit(fastmath=True, error_model="numpy")

    @njit(fastmath=True, error_model="numpy", inline="always")
    def tanh(x):
        x = hi if x > hi else x
        x = lo if x < lo else x
        x2 = x * x
        return x * ((((p4 * x2 + p3) * x2 + p2) * x2 + p1) * x2 + p0) / (((q3 * x2 + q2) * x2 + q1) * x2 + q0)

    @jit
    def tanh_array(x, out):
        for k in range(x.shape[0]):
            out[k] = tanh(x[k])

    @jit
    def forward_row(z, gates, c_prev, c, tc, h, H):
        """z = a + s for one batch row (4H,); gates [i, f, o, g] go to `gates`."""
        for j in range(3 * H):
            gates[j] = half * tanh(half * z[j]) + half
        for j in range(3 * H, 4 * H):
            gates[j] = tanh(z[j])
        for j in range(H):
            cc = gates[H + j] * c_prev[j] + gates[j] * gates[3 * H + j]
            t = tanh(cc)
            c[j], tc[j], h[j] = cc, t, gates[2 * H + j] * t

    @jit
    def forward_step(a, s, c_prev, c, tc, h):
        for b in range(c.shape[0]):
            s[b] += a[b]
            forward_row(s[b], a[b], c_prev[b], c[b], tc[b], h[b], c.shape[1])

    @jit
    def backward_step(a, dh_rec, dh_top, tc, c_prev, dc, da):
        B, H = dc.shape
        for b in range(B):
            for j in range(H):
                i, f, o, g = a[b, j], a[b, H + j], a[b, 2 * H + j], a[b, 3 * H + j]
                t = tc[b, j]
                dh = dh_rec[b, j] + dh_top[b, j]
                dcv = dc[b, j] + dh * o * (one - t * t)
                da[b, j] = dcv * g * i * (one - i)
                da[b, H + j] = dcv * c_prev[b, j] * f * (one - f)
                da[b, 2 * H + j] = dh * t * o * (one - o)
                da[b, 3 * H + j] = dcv * i * (one - g * g)
                dc[b, j] = dcv * f

    def lstm_forward(A, W_h, h0, c0):
        T, B, G = A.shape
        Hs0, Cs0 = cells._with_h0(h0, T), cells._with_h0(c0, T)
        TCs = np.empty((T, B, G // 4), dtype=A.dtype)
        s = np.empty((B, G), dtype=A.dtype)
        for t in range(T):
            np.matmul(Hs0[t], W_h, out=s)
            forward_step(A[t], s, Cs0[t], Cs0[t + 1], TCs[t], Hs0[t + 1])
        return Hs0[1:], (Hs0[-1], Cs0[-1]), cells.Trace("lstm", Hs0, W_h, gates=A, Cs0=Cs0, TCs=TCs)

    def lstm_backward(dH, tr):
        A, Hs0, Cs0, TCs, W_h = tr.gates, tr.Hs0, tr.Cs0, tr.TCs, tr.W_h
        T, B, G = A.shape
        W_hT = np.ascontiguousarray(W_h.T)
        dA = np.empty_like(A)
        dc = np.zeros((B, G // 4), dtype=A.dtype)
        dh = np.zeros((B, G // 4), dtype=A.dtype)
        for t in reversed(range(T)):
            if t < T - 1:
                np.matmul(dA[t + 1], W_hT, out=dh)
            backward_step(A[t], dh, dH[t], TCs[t], Cs0[t], dc, dA[t])
        return dA, cells._weight_grad(Hs0, dA), (dA[0] @ W_hT, dc)

    return tanh_array, lstm_forward, lstm_backward


def agreement(H: int, fused_forward, fused_backward) -> float:
    """Largest difference between the NumPy and the fused cell: outputs and all gradients."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    W = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(f32)
    A = rng.standard_normal((bench.T, bench.B, 4 * H)).astype(f32)
    h0, c0 = (0.1 * rng.standard_normal((2, bench.B, H))).astype(f32)
    dH = rng.standard_normal((bench.T, bench.B, H)).astype(f32)
    out = []
    for fwd, bwd in ((cells._lstm_forward, cells._lstm_backward), (fused_forward, fused_backward)):
        Hs, _, cache = fwd(A.copy(), W, h0, c0)
        dA, dW, (dh0, dc0) = bwd(dH.copy(), cache)
        out.append((Hs, dA, dW / np.abs(dW).max(), dh0, dc0))
    return max(float(np.abs(a - b).max()) for a, b in zip(*out, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", default="256,512,128", help="LSTM hidden sizes, comma separated")
    ap.add_argument("--reps", type=int, default=7, help="alternating blocks per variant")
    ap.add_argument("--threads", type=int, default=bench.THREADS, help="BLAS / torch threads")
    args = ap.parse_args()
    try:
        import numba
        import torch
    except ImportError as e:
        sys.exit(f"needs numba and torch for this experiment: {e}")
    torch.set_num_threads(args.threads)
    P, Q = fit_tanh()
    tanh_array, fused_forward, fused_backward = build_kernels(P, Q)
    grid = np.linspace(-12, 12, 2_000_001, dtype=np.float32)
    approx = np.empty_like(grid)
    tanh_array(grid, approx)
    print(f"numba {numba.__version__}, torch {torch.__version__}, numpy {np.__version__}, {args.threads} threads")
    exact = np.tanh(grid.astype(np.float64))
    print(f"rational tanh, float32, on [-12, 12]: max error {np.abs(approx - exact).max():.1e} "
          f"(np.tanh: {np.abs(np.tanh(grid) - exact).max():.1e})")
    text, _ = bench.load_text(bench.DATA)
    corpus = make_corpus(text, mode="stream", val_fraction=0.0)
    numpy_cell = (cells._lstm_forward, cells._lstm_backward)
    print(f"\n{'model':<10}{'max diff':>10}{'numpy ch/s':>12}{'fused ch/s':>12}{'torch ch/s':>12}"
          f"{'numpy':>7}{'fused':>7}")
    for H in (int(h) for h in args.hidden.split(",")):
        diff = agreement(H, fused_forward, fused_backward)
        runs = {"numpy": bench.CharrnnRun("lstm", H, corpus), "fused": bench.CharrnnRun("lstm", H, corpus),
                "torch": bench.TorchRun(torch, "lstm", H, corpus)}
        steps = max(2, int(1.5 / bench.time_block(runs["numpy"].train_step, 1)))
        rates: dict[str, list[float]] = {k: [] for k in runs}
        try:
            for _ in range(args.reps):
                for k, run in runs.items():
                    cells._lstm_forward, cells._lstm_backward = (
                        (fused_forward, fused_backward) if k == "fused" else numpy_cell)
                    rates[k].append(bench.B * bench.T / bench.time_block(run.train_step, steps))
        finally:
            cells._lstm_forward, cells._lstm_backward = numpy_cell
        m = {k: statistics.median(v) for k, v in rates.items()}
        print(f"lstm-{H:<5}{diff:>10.1e}{m['numpy']:>12,.0f}{m['fused']:>12,.0f}{m['torch']:>12,.0f}"
              f"{m['numpy'] / m['torch']:>7.2f}{m['fused'] / m['torch']:>7.2f}", flush=True)
    print(f"\ntraining chars/s, medians of {args.reps} alternating blocks; the last two columns are ratios to torch;"
          "\nmax diff: largest difference between the two cells' outputs and gradients (dW_h scaled to max 1)")


if __name__ == "__main__":
    main()
