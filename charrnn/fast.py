"""The optional fast backend: each time step's elementwise work as one compiled loop (numba).

`pip install 'charrnn[fast]'` adds numba; training then runs `cells.forward` and `cells.backward`
(and the input lookup's gradient, `model.scatter_rows`) on the loops below instead of their NumPy
code (backend.py; CHARRNN_BACKEND=numpy keeps NumPy). The matrix products stay NumPy (OpenBLAS),
the same calls as in cells.py; what changes is the work between them. cells.py runs it as 10-15
whole-array NumPy passes per step, each reading and writing (B, H) arrays; a kernel here reads
each input once and writes each output once, in one pass over the B x H units. cells.py is the
reference and says the same math in NumPy.

tanh. numba's own tanh calls the C library once per number (~30 ns); NumPy 2's float32
tanh is vectorised only for AVX-512 (~3 ns on AVX2). In float32 the kernels use a rational
function instead, tanh(x) ~ x P(x^2) / Q(x^2) with P and Q of degree 4, on x clamped to
[-9, 9] (tanh(9) rounds to 1 in float32) and the result clamped to [-1, 1]. It has no
branches and no calls, so LLVM vectorises the loops (8 float32 lanes on AVX2). Fitted in
float64 with P(0) = Q(0) = 1, so that tanh(x) ~ x near 0, by least squares of the linearised
x P(x^2) - tanh(x) Q(x^2) = 0 on 40,000 points in (0, 9], weighted by 1 / tanh(x) for the
relative error and reweighted 60 times by 1 + 30 err / max err towards a minimax fit
(benchmarks/fused_lstm.py's fit_tanh does the same for the absolute error). Measured on
float32 inputs in [-12, 12] against float64 tanh: relative error at most 3.6e-7, a few units
in the last place (NumPy's float32 tanh: 1.1e-7). A NaN stays NaN. In float64 the kernels
call math.tanh, exact as NumPy is: float64 is what gradient checks run in, and an
approximation's 1e-7 there would swamp their finite differences.
sigmoid(x) = (1 + tanh(x / 2)) / 2, as cells.py computes it.

The kernels are compiled at their first call for each dtype (1.5-2 s for the LSTM's two) and
cached on disk (cache=True: next to this file, or in the user's cache directory where that is
not writable). A later process loads them instead, which with importing numba still costs
about a second: one reason only training uses them (backend.py).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, types
from numba.extending import overload

from charrnn.cells import GATES, Trace, _weight_grad, _with_h0

VERSION = numba.__version__

# tanh(x) ~ x P(x^2) / Q(x^2), coefficients lowest degree first (see the module docstring).
_P = (1.0, 0.13383999618295883, 0.0034990191073809573, 2.066163734295422e-05, 1.3420323441513254e-08)
_Q = (1.0, 0.46717321094351544, 0.025890293924855347, 0.00032910759334980015, 7.80493881756268e-07)
p0, p1, p2, p3, p4 = (np.float32(c) for c in _P)
q0, q1, q2, q3, q4 = (np.float32(c) for c in _Q)
# float32 constants: a Python literal is float64 to numba and would promote float32 math to
# float64; a float32 one gives way to a float64 operand in the float64 kernels.
CLAMP, ZERO, HALF, ONE = np.float32(9.0), np.float32(0.0), np.float32(0.5), np.float32(1.0)

# No "nnan"/"ninf" fast-math flags: with them LLVM may turn the clamps into min/max that drop a
# NaN, and a diverged run would go on with finite nonsense instead of stopping.
FASTMATH = {"contract", "arcp", "afn", "nsz"}
kernel = njit(fastmath=FASTMATH, error_model="numpy", cache=True, nogil=True)


def tanh(x):
    """tanh of one number: the rational function in float32, math.tanh otherwise."""
    return math.tanh(x)


@overload(tanh, inline="always", jit_options={"fastmath": FASTMATH})
def _tanh_typed(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def rational(x):
            x = min(max(x, -CLAMP), CLAMP)
            x2 = x * x
            p = (((p4 * x2 + p3) * x2 + p2) * x2 + p1) * x2 + p0
            q = (((q4 * x2 + q3) * x2 + q2) * x2 + q1) * x2 + q0
            return min(max(x * p / q, -ONE), ONE)
        return rational
    return lambda x: math.tanh(x)


@njit(fastmath=FASTMATH, inline="always")
def sigmoid(x):
    """(1 + tanh(x / 2)) / 2, in x's own precision."""
    return HALF * tanh(HALF * x) + HALF


@kernel
def tanh_array(x, out):
    """out = tanh(x) over a 1-d array (for the tests: the kernels' tanh on its own)."""
    for k in range(x.shape[0]):
        out[k] = tanh(x[k])


# ---------------------------------------------------------------- vanilla RNN


@kernel
def rnn_forward_step(a, s, h, relu):
    """h_t = f(a + s), f = relu or tanh (cells._rnn_cell)."""
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            z = a[b, j] + s[b, j]
            h[b, j] = max(z, ZERO) if relu else tanh(z)  # numba's max keeps a NaN, as np.maximum does


@kernel
def rnn_backward_step(da, dh, h, relu):
    """da = (dL/dh_t from above + dh, the part through h_t W_h) * f'(a_t), in place:
    tanh' = 1 - h_t^2, relu' = [h_t > 0] (cells._rnn_backward)."""
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            y = h[b, j]
            d = (y > 0) * ONE if relu else ONE - y * y
            da[b, j] = (da[b, j] + dh[b, j]) * d


def rnn_forward(A, W_h, h0, activation):
    T, B, H = A.shape
    Hs0 = _with_h0(h0, T)
    s = np.empty((B, H), dtype=A.dtype)  # h_{t-1} W_h
    relu = activation == "relu"
    for t in range(T):
        np.matmul(Hs0[t], W_h, out=s)
        rnn_forward_step(A[t], s, Hs0[t + 1], relu)
    return Hs0[1:], (Hs0[-1],), Trace("rnn", Hs0, W_h, activation)


def rnn_backward(dH, tr):
    Hs0, W_h = tr.Hs0, tr.W_h
    Hs = Hs0[1:]
    T, B, H = Hs.shape
    W_hT = np.ascontiguousarray(W_h.T)  # (H, H)
    dA = dH  # (T, B, H), reused in place
    dh = np.zeros((B, H), dtype=Hs.dtype)  # dL/dh_t through h_t W_h; none at the last step
    relu = tr.activation == "relu"
    for t in reversed(range(T)):
        if t < T - 1:
            np.matmul(dA[t + 1], W_hT, out=dh)
        rnn_backward_step(dA[t], dh, Hs[t], relu)
    dh0 = dA[0] @ W_hT  # (B, H)
    return dA, _weight_grad(Hs0, dA), (dh0,)


# ---------------------------------------------------------------- LSTM


@kernel
def lstm_forward_step(a, s, c_prev, gates, c, tc, h):
    """With z = a + s, gate blocks [i, f, o, g] (cells._lstm_cell):
        i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
        c_t = f * c_{t-1} + i * g;  tc = tanh(c_t);  h_t = o * tc
    The activated gates go to `gates` (backward needs them). One loop per kind of work, over
    a row at a time: a single loop over j reading and writing all four blocks at j, H + j, ...
    ran 3 times slower (LLVM vectorised it only in part)."""
    B, H = c.shape
    for b in range(B):
        z, s_b, gate = a[b], s[b], gates[b]  # (4H,) each
        for j in range(3 * H):
            gate[j] = sigmoid(z[j] + s_b[j])
        for j in range(3 * H, 4 * H):
            gate[j] = tanh(z[j] + s_b[j])
        i, f, o, g = gate[:H], gate[H : 2 * H], gate[2 * H : 3 * H], gate[3 * H :]
        c_prev_b, c_b, tc_b, h_b = c_prev[b], c[b], tc[b], h[b]  # (H,) each
        for j in range(H):
            c_t = f[j] * c_prev_b[j] + i[j] * g[j]
            tc_t = tanh(c_t)
            c_b[j] = c_t
            tc_b[j] = tc_t
            h_b[j] = o[j] * tc_t


@kernel
def lstm_backward_step(a, dh_top, dh, tc, c_prev, dc, da):
    """Step t backwards (cells._lstm_backward), with dL/dh_t = dh_top + dh (from above, and
    through h_t W_h) and dc = dL/dc_t from step t + 1 on entry, dL/dc_{t-1} on exit:
        do = dh * tanh(c_t);  dc += dh * o * (1 - tanh(c_t)^2)
        di = dc * g,  df = dc * c_{t-1},  dg = dc * i,  dc_{t-1} = dc * f
    each gate's then times its activation's derivative: s (1 - s) for i, f, o, 1 - g^2 for g."""
    B, H = dc.shape
    for b in range(B):
        gate, d = a[b], da[b]  # (4H,) activated gates [i, f, o, g], their gradients
        i, f, o, g = gate[:H], gate[H : 2 * H], gate[2 * H : 3 * H], gate[3 * H :]
        di, df, do, dg = d[:H], d[H : 2 * H], d[2 * H : 3 * H], d[3 * H :]
        dh_top_b, dh_b, tc_b, c_prev_b, dc_b = dh_top[b], dh[b], tc[b], c_prev[b], dc[b]  # (H,) each
        for j in range(H):
            t = tc_b[j]
            dh_t = dh_top_b[j] + dh_b[j]
            do_t = dh_t * t
            dc_t = dc_b[j] + o[j] * (dh_t - do_t * t)
            di[j] = dc_t * g[j] * (i[j] - i[j] * i[j])
            df[j] = dc_t * c_prev_b[j] * (f[j] - f[j] * f[j])
            do[j] = do_t * (o[j] - o[j] * o[j])
            dg[j] = dc_t * i[j] * (ONE - g[j] * g[j])
            dc_b[j] = dc_t * f[j]


def lstm_forward(A, W_h, h0, c0):
    T, B, G = A.shape
    H = G // 4
    Hs0, Cs0 = _with_h0(h0, T), _with_h0(c0, T)  # [t] is h_{t-1}, c_{t-1}; [t + 1] is h_t, c_t
    TCs = np.empty((T, B, H), dtype=A.dtype)  # tanh(c_t)
    s = np.empty((B, G), dtype=A.dtype)  # h_{t-1} W_h
    gates = np.empty_like(A)  # (T, B, 4H) activated
    for t in range(T):
        np.matmul(Hs0[t], W_h, out=s)
        lstm_forward_step(A[t], s, Cs0[t], gates[t], Cs0[t + 1], TCs[t], Hs0[t + 1])
    return Hs0[1:], (Hs0[-1], Cs0[-1]), Trace("lstm", Hs0, W_h, gates=gates, Cs0=Cs0, TCs=TCs)


def lstm_backward(dH, tr):
    A, Hs0, Cs0, TCs, W_h = tr.gates, tr.Hs0, tr.Cs0, tr.TCs, tr.W_h
    T, B, G = A.shape
    H = G // 4
    W_hT = np.ascontiguousarray(W_h.T)  # (4H, H)
    dA = np.empty_like(A)  # (T, B, 4H)
    dc = np.zeros((B, H), dtype=A.dtype)  # dL/dc_t carried backwards
    dh = np.zeros((B, H), dtype=A.dtype)  # dL/dh_t through h_t W_h; none at the last step
    for t in reversed(range(T)):
        if t < T - 1:
            np.matmul(dA[t + 1], W_hT, out=dh)
        lstm_backward_step(A[t], dH[t], dh, TCs[t], Cs0[t], dc, dA[t])
    dh0 = dA[0] @ W_hT  # (B, H)
    return dA, _weight_grad(Hs0, dA), (dh0, dc)


# ---------------------------------------------------------------- GRU


@kernel
def gru_forward_step(a, s, h_prev, gates, h):
    """Gate blocks [r, u, n] (cells._gru_cell), activated into `gates`:
        r = sigmoid(a_r + s_r),  u = sigmoid(a_u + s_u),  n = tanh(a_n + r * s_n)
        h_t = n + u * (h_{t-1} - n)
    A loop for r and u, one for n and h_t (see lstm_forward_step)."""
    B, H = h.shape
    for b in range(B):
        z, s_b, gate = a[b], s[b], gates[b]  # (3H,) each
        for j in range(2 * H):
            gate[j] = sigmoid(z[j] + s_b[j])
        r, u, n = gate[:H], gate[H : 2 * H], gate[2 * H :]
        z_n, s_n, h_prev_b, h_b = z[2 * H :], s_b[2 * H :], h_prev[b], h[b]  # (H,) each
        for j in range(H):
            n_t = tanh(z_n[j] + r[j] * s_n[j])
            n[j] = n_t
            h_b[j] = n_t + u[j] * (h_prev_b[j] - n_t)


@kernel
def gru_backward_step(a, s, h_prev, dh_top, dh, carry, da, ds):
    """Step t backwards (cells._gru_backward), with dL/dh_t = dh_top + dh + carry (from above,
    through s_{t+1} = h_t W_h, and u_{t+1} * dL/dh_{t+1} directly); carry becomes u_t * dL/dh_t:
        du = dh_t * (h_{t-1} - n) * u (1 - u)
        dn = dh_t * (1 - u) * (1 - n^2)
        dr = dn * s_n * r (1 - r)
    dA_t = [dr, du, dn] and dS_t = [dr, du, dn * r] (the gradient w.r.t. s_t = h_{t-1} W_h)."""
    B, H = h_prev.shape
    for b in range(B):
        gate, d, d_s = a[b], da[b], ds[b]  # (3H,) each
        r, u, n = gate[:H], gate[H : 2 * H], gate[2 * H :]
        dr, du, dn = d[:H], d[H : 2 * H], d[2 * H :]
        ds_r, ds_u, ds_n = d_s[:H], d_s[H : 2 * H], d_s[2 * H :]
        s_n, h_prev_b, dh_top_b, dh_b, carry_b = s[b, 2 * H :], h_prev[b], dh_top[b], dh[b], carry[b]  # (H,) each
        for j in range(H):
            dh_t = dh_top_b[j] + dh_b[j] + carry_b[j]
            du_t = dh_t * (h_prev_b[j] - n[j]) * (u[j] - u[j] * u[j])
            dn_t = (dh_t - dh_t * u[j]) * (ONE - n[j] * n[j])
            dr_t = dn_t * s_n[j] * (r[j] - r[j] * r[j])
            carry_b[j] = dh_t * u[j]
            dr[j], du[j], dn[j] = dr_t, du_t, dn_t
            ds_r[j], ds_u[j], ds_n[j] = dr_t, du_t, dn_t * r[j]


def gru_forward(A, W_h, h0):
    T, B, G = A.shape
    Hs0 = _with_h0(h0, T)
    S = np.empty((T, B, G), dtype=A.dtype)  # s_t = h_{t-1} W_h; backward needs s_n
    gates = np.empty_like(A)  # (T, B, 3H) activated
    for t in range(T):
        np.matmul(Hs0[t], W_h, out=S[t])
        gru_forward_step(A[t], S[t], Hs0[t], gates[t], Hs0[t + 1])
    return Hs0[1:], (Hs0[-1],), Trace("gru", Hs0, W_h, gates=gates, S=S)


def gru_backward(dH, tr):
    A, Hs0, S, W_h = tr.gates, tr.Hs0, tr.S, tr.W_h
    T, B, G = A.shape
    H = G // 3
    W_hT = np.ascontiguousarray(W_h.T)  # (3H, H)
    dA = np.empty_like(A)  # (T, B, 3H) gradients w.r.t. A_t = x_t W_x + b
    dS = np.empty_like(A)  # (T, B, 3H) gradients w.r.t. s_t = h_{t-1} W_h
    dh = np.zeros((B, H), dtype=A.dtype)  # dL/dh_t through s_{t+1}; none at the last step
    carry = np.zeros((B, H), dtype=A.dtype)  # u_{t+1} * dL/dh_{t+1}, the direct path to h_t
    for t in reversed(range(T)):
        if t < T - 1:
            np.matmul(dS[t + 1], W_hT, out=dh)
        gru_backward_step(A[t], S[t], Hs0[t], dH[t], dh, carry, dA[t], dS[t])
    dh0 = dS[0] @ W_hT + carry  # (B, H)
    return dA, _weight_grad(Hs0, dS), (dh0,)


# ---------------------------------------------------------------- the input lookup's gradient


@kernel
def scatter_add(ids, rows, out):
    """out[ids[j]] += rows[j] for every j, in order."""
    N, G = rows.shape
    for j in range(N):
        o, r = out[ids[j]], rows[j]
        for g in range(G):
            o[g] += r[g]


def scatter_rows(ids, rows, n):
    """model.scatter_rows in one pass over the rows. The one-hot product it replaces does n
    times the additions needed: for LSTM-256 on tiny-shakespeare (n = 67, 2,048 rows of 1,024)
    2.9-5.8 ms a step, against 0.3-0.4 ms here."""
    if ids.ndim != 1 or len(ids) != len(rows):  # the loop checks neither its indices nor the lengths
        raise ValueError(f"one id per row: ids {ids.shape}, rows {rows.shape}")
    if len(ids) and not (0 <= ids.min() and ids.max() < n):
        raise IndexError(f"ids must be in [0, {n})")
    out = np.zeros((n, rows.shape[1]), dtype=rows.dtype)
    scatter_add(np.ascontiguousarray(ids), np.ascontiguousarray(rows), out)
    return out


def forward(cell, A, W_h, h0, c0=None, activation="tanh"):
    """cells.forward with these kernels: the same arguments, results and Trace. Unlike it, A
    is left as it was."""
    if cell == "lstm":
        return lstm_forward(A, W_h, h0, c0)
    if cell == "gru":
        return gru_forward(A, W_h, h0)
    return rnn_forward(A, W_h, h0, activation)


def backward(dH, trace):
    """cells.backward with these kernels, for a Trace from either forward."""
    if trace.cell == "lstm":
        return lstm_backward(dH, trace)
    if trace.cell == "gru":
        return gru_backward(dH, trace)
    return rnn_backward(dH, trace)


def warm_up(cell: str, activation: str = "tanh") -> None:
    """Compile (the first run after installing) or load from the cache (later runs) the float32
    kernels of `cell` now: 0.5-2 s that would otherwise fall on the first training step, whose
    pace the automatic --eval-every is fitted to (one step looking seconds long made a 30-second
    run evaluate every 7 steps)."""
    H = 1
    G = GATES[cell] * H
    A = np.zeros((1, 1, G), dtype=np.float32)  # (T, B, G)
    W_h = np.zeros((H, G), dtype=np.float32)
    h0 = np.zeros((1, H), dtype=np.float32)
    _, _, trace = forward(cell, A, W_h, h0, h0.copy() if cell == "lstm" else None, activation)
    backward(np.zeros((1, 1, H), dtype=np.float32), trace)
    scatter_rows(np.zeros(1, dtype=np.int32), np.zeros((1, G), dtype=np.float32), 1)  # training's ids are int32
