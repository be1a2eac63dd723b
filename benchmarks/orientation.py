"""An experiment for #17 (not used by charrnn): the recurrent product the other way round.

    python benchmarks/orientation.py --threads 1   # ~2 minutes
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
           gathers s^T and writes h_t^T (checked to give the same hidden states first);
  layer:   a whole first (lookup) LSTM layer, forward and backward, as training runs it with numba,
           against the same layer kept in (feature, batch) layout from its lookup to the lookup's
           gradient, so that no kernel gathers and both recurrent products take the faster
           orientation (`layer_fb`; checked to give the same outputs and gradients first).

In the (feature, batch) layout the kernels index whole arrays (`AT[j, t]`) rather than take
slices such as `AT[:, t, :]`: numba compiles a non-contiguous 2-D slice argument to strided code
that it does not vectorise (a forward step took 98 against 16 us).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (sets the BLAS threads before numpy loads)
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from charrnn import fast, model  # noqa: E402
from charrnn.cells import Trace, _with_h0  # noqa: E402
from charrnn.fast import FASTMATH, ONE, kernel, sigmoid, tanh  # noqa: E402

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


# ---------------------------------------------------------------- a whole layer in (feature, batch) layout


@kernel
def transpose_steps(X, out):
    """out[t] = X[t]^T for X (T, R, C): a row's 16 values at a time, so each read is one cache line."""
    T, R, C = X.shape
    for t in range(T):
        x, o = X[t], out[t]
        for c0 in range(0, C, 16):
            for r in range(R):
                for c in range(c0, min(c0 + 16, C)):
                    o[c, r] = x[r, c]


@kernel
def lookup_columns(ids, W_xT, b, out):
    """out[j, k] = W_x[ids[k], j] + b[j], out (G, N): the input projection, feature-major."""
    G, N = out.shape
    for j in range(G):
        row, o, b_j = W_xT[j], out[j], b[j]
        for k in range(N):
            o[k] = row[ids[k]] + b_j


@kernel
def scatter_columns(ids, d, outT):
    """outT[j, v] += d[j, k] wherever ids[k] == v: the lookup's gradient, transposed."""
    G, N = d.shape
    for j in range(G):
        row, o = d[j], outT[j]
        for k in range(N):
            o[ids[k]] += row[k]


@kernel
def lstm_step_fb(AT, t, s, CT, gT, TCT, HT):
    """fast.lstm_forward_step at step t in (feature, batch) layout: AT (G, T, B), s (G, B),
    gT (T, G, B), CT and HT (T + 1, H, B), TCT (T, H, B)."""
    G, _, B = AT.shape
    H = G // 4
    gates = gT[t]
    for j in range(3 * H):
        a, s_j, g_j = AT[j, t], s[j], gates[j]
        for b in range(B):
            g_j[b] = sigmoid(a[b] + s_j[b])
    for j in range(3 * H, 4 * H):
        a, s_j, g_j = AT[j, t], s[j], gates[j]
        for b in range(B):
            g_j[b] = tanh(a[b] + s_j[b])
    for j in range(H):
        i, f, o, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        c_prev, c, tc, h = CT[t, j], CT[t + 1, j], TCT[t, j], HT[t + 1, j]
        for b in range(B):
            c_t = f[b] * c_prev[b] + i[b] * g[b]
            tc_t = tanh(c_t)
            c[b], tc[b], h[b] = c_t, tc_t, o[b] * tc_t


@kernel
def lstm_back_fb(gT, t, dHT, dh, TCT, CT, dc, dAT):
    """fast.lstm_backward_step at step t in (feature, batch) layout; writes dAT[:, t] (G, T, B)."""
    _, G, B = gT.shape
    H = G // 4
    gates = gT[t]
    for j in range(H):
        i, f, o, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        di, df, do, dg = dAT[j, t], dAT[H + j, t], dAT[2 * H + j, t], dAT[3 * H + j, t]
        dh_top, dh_j, tc, c_prev, dc_j = dHT[t, j], dh[j], TCT[t, j], CT[t, j], dc[j]
        for b in range(B):
            tc_b = tc[b]
            dh_t = dh_top[b] + dh_j[b]
            do_t = dh_t * tc_b
            dc_t = dc_j[b] + o[b] * (dh_t - do_t * tc_b)
            di[b] = dc_t * g[b] * (i[b] - i[b] * i[b])
            df[b] = dc_t * c_prev[b] * (f[b] - f[b] * f[b])
            do[b] = do_t * (o[b] - o[b] * o[b])
            dg[b] = dc_t * i[b] * (ONE - g[b] * g[b])
            dc_j[b] = dc_t * f[b]


def layer_plain(ids, W_x, b, W_h, h0, c0, dH):
    """The first layer as training runs it with numba (model.layer_forward / layer_backward):
    outputs, then the gradients of W_x, b, W_h, h0 and c0 for dL/d(outputs) dH."""
    T, B = ids.shape
    Hs, _, trace = fast.lstm_forward((W_x + b)[ids], W_h, h0, c0)
    dA, dW_h, (dh0, dc0) = fast.lstm_backward(dH.copy(), trace)
    dW_x = fast.scatter_rows(ids.reshape(-1), dA.reshape(T * B, -1), len(W_x))
    return Hs, dW_x, dW_x.sum(axis=0), dW_h, dh0, dc0


def layer_fb(ids, W_x, b, W_h, h0, c0, dH):
    """layer_plain in (feature, batch) layout: inputs and their gradients (G, T, B), so that the
    weight gradient is one product and the lookup's gradient reads rows; gates and states (T, ., B).
    Transposed once each: the outputs (for the layer above) and their gradient."""
    T, B = ids.shape
    V, G = W_x.shape
    H, dt = G // 4, W_x.dtype
    AT = np.empty((G, T, B), dt)
    lookup_columns(ids.reshape(-1), np.ascontiguousarray(W_x.T), b, AT.reshape(G, T * B))
    HT, CT = np.empty((T + 1, H, B), dt), np.empty((T + 1, H, B), dt)
    HT[0], CT[0] = h0.T, c0.T
    TCT, gT = np.empty((T, H, B), dt), np.empty((T, G, B), dt)
    W_hT, s = np.ascontiguousarray(W_h.T), np.empty((G, B), dt)
    for t in range(T):
        np.matmul(W_hT, HT[t], out=s)  # (G, H) @ (H, B)
        lstm_step_fb(AT, t, s, CT, gT, TCT, HT)
    Hs0 = np.empty((T + 1, B, H), dt)
    transpose_steps(HT, Hs0)
    dHT = np.empty((T, H, B), dt)
    transpose_steps(dH, dHT)
    dAT = np.empty((G, T, B), dt)
    dc, dh = np.zeros((H, B), dt), np.zeros((H, B), dt)
    for t in reversed(range(T)):
        if t < T - 1:
            np.matmul(W_h, dAT[:, t + 1], out=dh)  # (H, G) @ (G, B)
        lstm_back_fb(gT, t, dHT, dh, TCT, CT, dc, dAT)
    dA2T = dAT.reshape(G, T * B)
    dW_h = Hs0[:-1].reshape(T * B, H).T @ dA2T.T
    dW_xT = np.zeros((G, V), dt)
    scatter_columns(ids.reshape(-1), dA2T, dW_xT)
    dW_x = np.ascontiguousarray(dW_xT.T)
    return Hs0[1:], dW_x, dW_x.sum(axis=0), dW_h, (W_h @ dAT[:, 0]).T, np.ascontiguousarray(dc.T)


def measure_layer(H: int, reps: int, rng: np.random.Generator, V: int = 65) -> dict[str, float]:
    """Median ms per batch of a whole first layer each way, alternating."""
    G = 4 * H
    ids = rng.integers(0, V, (T, B)).astype(np.int32)
    W_x = (0.1 * rng.standard_normal((V, G))).astype(np.float32)
    W_h = (0.05 * rng.standard_normal((H, G))).astype(np.float32)
    b = (0.1 * rng.standard_normal(G)).astype(np.float32)
    h0 = (0.1 * rng.standard_normal((B, H))).astype(np.float32)
    c0, dH = h0.copy(), rng.standard_normal((T, B, H)).astype(np.float32)
    args = ids, W_x, b, W_h, h0, c0, dH
    for want, got in zip(layer_plain(*args), layer_fb(*args), strict=True):
        assert np.allclose(want, got, rtol=1e-4, atol=1e-4), "the (feature, batch) layer differs"
    return bench.median_ms({"plain": lambda: layer_plain(*args), "fb": lambda: layer_fb(*args)}, reps, 3)


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
    return bench.median_ms(runs, reps, 5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=bench.THREADS, help="BLAS threads [default: all cores]")
    ap.add_argument("--hidden", default="256,512", help="LSTM sizes, comma separated")
    ap.add_argument("--reps", type=int, default=9, help="alternating blocks")
    args = ap.parse_args()
    model._keep_freed_memory()  # as training does: no page faults on each batch's new arrays
    rng = np.random.default_rng(0)
    print(f"LSTM, B {B}, T {T}, float32, {bench.THREADS} BLAS thread(s); ms per batch, median of {args.reps}")
    print(f"{'H':>5}{'product h@W':>13}{'W^T@h^T':>10}{'forward':>10}{'transposed':>12}{'ratio':>7}"
          f"{'tiled':>8}{'ratio':>7}")
    for H in map(int, args.hidden.split(",")):
        m = measure(H, args.reps, rng)
        print(f"{H:>5}{m['plain']:>13.2f}{m['flipped']:>10.2f}{m['forward']:>10.2f}{m['transposed']:>12.2f}"
              f"{m['forward'] / m['transposed']:>7.2f}{m['tiled']:>8.2f}{m['forward'] / m['tiled']:>7.2f}")
    print(f"\nOne lookup LSTM layer, forward and backward (V 65); ms per batch, median of {args.reps}")
    print(f"{'H':>5}{'as trained':>12}{'(feature, batch)':>18}{'ratio':>7}")
    for H in map(int, args.hidden.split(",")):
        m = measure_layer(H, args.reps, rng)
        print(f"{H:>5}{m['plain']:>12.2f}{m['fb']:>18.2f}{m['plain'] / m['fb']:>7.2f}")


if __name__ == "__main__":
    main()
