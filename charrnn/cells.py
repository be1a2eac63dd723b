"""Recurrent cells, forward and backward over a whole sequence, batched.

Shapes: T time steps, B batch, H hidden size, G = gates * H (1 rnn, 3 gru, 4 lstm).
Every cell receives the input projections of all steps at once, A (T, B, G) with
A[t] = x_t W_x + b, so a step costs one (B, H) @ (H, G) product plus elementwise math.
`forward` overwrites A with the activated gates, which `backward` needs.

Vanilla RNN (f = tanh or relu):
    h_t = f(A_t + h_{t-1} W_h)

LSTM, gate blocks of A in the order [i, f, o, g]:
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)     a = A_t + h_{t-1} W_h
    g = tanh(a_g)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

GRU, gate blocks in the order [r, u, n], with the reset gate applied after the
recurrent product (as cuDNN and PyTorch do) so that one product serves all gates:
    s = h_{t-1} W_h
    r = sigmoid(A_r + s_r),  u = sigmoid(A_u + s_u)
    n = tanh(A_n + r * s_n)
    h_t = (1 - u) * n + u * h_{t-1}

Backward takes dH (T, B, H), the loss gradient w.r.t. every h_t from above, and returns
dA (T, B, G), dW_h (H, G) and the gradients w.r.t. the initial state. The weight gradient
is one large product after the loop: dW_h = sum_t h_{t-1}^T dS_t.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CELLS = tuple(GATES)
ACTIVATIONS = ("tanh", "relu")

Cache = tuple[Any, ...]


def sigmoid_(x: np.ndarray) -> np.ndarray:
    """In-place logistic sigmoid, as 0.5 * (1 + tanh(x / 2)): no overflow, no exp."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


def forward(
    cell: str,
    A: np.ndarray,
    W_h: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None = None,
    activation: str = "tanh",
) -> tuple[np.ndarray, tuple[np.ndarray, ...], Cache]:
    """Run `cell` over all T steps. Returns (Hs (T, B, H), final state, cache).

    The final state is (h_T,) or, for the LSTM, (h_T, c_T). A is overwritten.
    """
    if cell == "lstm":
        assert c0 is not None
        return _lstm_forward(A, W_h, h0, c0)
    if cell == "gru":
        return _gru_forward(A, W_h, h0)
    return _rnn_forward(A, W_h, h0, activation)


def backward(
    cell: str, dH: np.ndarray, cache: Cache
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Returns (dA (T, B, G), dW_h (H, G), gradient of the initial state). dH is overwritten."""
    if cell == "lstm":
        return _lstm_backward(dH, cache)
    if cell == "gru":
        return _gru_backward(dH, cache)
    return _rnn_backward(dH, cache)


def _weight_grad(h0: np.ndarray, Hs: np.ndarray, dS: np.ndarray) -> np.ndarray:
    """dW_h = sum_t h_{t-1}^T dS_t, as two products instead of T small ones."""
    T, B, H = Hs.shape
    dW_h = h0.T @ dS[0]  # (H, G)
    if T > 1:
        dW_h += Hs[:-1].reshape(-1, H).T @ dS[1:].reshape((T - 1) * B, -1)
    return dW_h


# ---------------------------------------------------------------- vanilla RNN


def _rnn_forward(A, W_h, h0, activation):
    T, B, H = A.shape
    h = h0
    for t in range(T):
        a = A[t]  # (B, H), becomes h_t
        a += h @ W_h
        if activation == "relu":
            np.maximum(a, 0, out=a)
        else:
            np.tanh(a, out=a)
        h = a
    return A, (A[-1],), (A, W_h, h0, activation)


def _rnn_backward(dH, cache):
    Hs, W_h, h0, activation = cache
    T, B, H = Hs.shape
    dA = dH  # (T, B, H), reused in place
    for t in reversed(range(T)):
        da = dA[t]
        if activation == "relu":
            da *= Hs[t] > 0
        else:
            da *= 1 - Hs[t] * Hs[t]
        if t:
            dA[t - 1] += da @ W_h.T
    dh0 = dA[0] @ W_h.T  # (B, H)
    return dA, _weight_grad(h0, Hs, dA), (dh0,)


# ---------------------------------------------------------------- LSTM


def _lstm_forward(A, W_h, h0, c0):
    T, B, G = A.shape
    H = G // 4
    Hs = np.empty((T, B, H), dtype=A.dtype)
    Cs = np.empty((T, B, H), dtype=A.dtype)
    TCs = np.empty((T, B, H), dtype=A.dtype)  # tanh(c_t)
    ig = np.empty((B, H), dtype=A.dtype)
    h, c = h0, c0
    for t in range(T):
        a = A[t]  # (B, 4H)
        a += h @ W_h
        sigmoid_(a[:, : 3 * H])
        np.tanh(a[:, 3 * H :], out=a[:, 3 * H :])
        i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        np.multiply(f, c, out=Cs[t])
        np.multiply(i, g, out=ig)
        Cs[t] += ig
        np.tanh(Cs[t], out=TCs[t])
        np.multiply(o, TCs[t], out=Hs[t])
        h, c = Hs[t], Cs[t]
    return Hs, (Hs[-1], Cs[-1]), (A, Hs, Cs, TCs, W_h, h0, c0)


def _lstm_backward(dH, cache):
    A, Hs, Cs, TCs, W_h, h0, c0 = cache
    T, B, G = A.shape
    H = G // 4
    dA = np.empty_like(A)  # (T, B, 4H)
    dc = np.zeros((B, H), dtype=A.dtype)  # dL/dc_t carried backwards
    tmp = np.empty((B, H), dtype=A.dtype)
    ds = np.empty((B, 3 * H), dtype=A.dtype)  # sigmoid'
    for t in reversed(range(T)):
        a, da = A[t], dA[t]
        i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        di, df, do, dg = da[:, :H], da[:, H : 2 * H], da[:, 2 * H : 3 * H], da[:, 3 * H :]
        dh, tc = dH[t], TCs[t]
        c_prev = Cs[t - 1] if t else c0
        np.multiply(dh, tc, out=do)  # dL/do = dh * tanh(c)
        np.multiply(tc, tc, out=tmp)  # dc += dh * o * (1 - tanh(c)^2)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp
        np.multiply(dc, g, out=di)
        np.multiply(dc, c_prev, out=df)
        np.multiply(dc, i, out=dg)
        dc *= f  # now dL/dc_{t-1}
        np.subtract(1, a[:, : 3 * H], out=ds)  # sigmoid' = s (1 - s)
        ds *= a[:, : 3 * H]
        da[:, : 3 * H] *= ds
        np.multiply(g, g, out=tmp)  # tanh' = 1 - g^2
        np.subtract(1, tmp, out=tmp)
        dg *= tmp
        if t:
            dH[t - 1] += da @ W_h.T
    dh0 = dA[0] @ W_h.T  # (B, H)
    return dA, _weight_grad(h0, Hs, dA), (dh0, dc)


# ---------------------------------------------------------------- GRU


def _gru_forward(A, W_h, h0):
    T, B, G = A.shape
    H = G // 3
    Hs = np.empty((T, B, H), dtype=A.dtype)
    Sn = np.empty((T, B, H), dtype=A.dtype)  # s_n = (h_{t-1} W_h)_n, needed for dr
    tmp = np.empty((B, H), dtype=A.dtype)
    h = h0
    for t in range(T):
        a = A[t]  # (B, 3H) -> [r, u, n]
        s = h @ W_h  # (B, 3H)
        a[:, : 2 * H] += s[:, : 2 * H]
        sigmoid_(a[:, : 2 * H])
        r, u, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        Sn[t] = s[:, 2 * H :]
        np.multiply(r, Sn[t], out=tmp)
        n += tmp
        np.tanh(n, out=n)
        np.subtract(h, n, out=tmp)  # h_t = n + u * (h_{t-1} - n)
        tmp *= u
        np.add(n, tmp, out=Hs[t])
        h = Hs[t]
    return Hs, (Hs[-1],), (A, Hs, Sn, W_h, h0)


def _gru_backward(dH, cache):
    A, Hs, Sn, W_h, h0 = cache
    T, B, G = A.shape
    H = G // 3
    dA = np.empty_like(A)  # (T, B, 3H) gradients w.r.t. A_t = x_t W_x + b
    dS = np.empty_like(A)  # (T, B, 3H) gradients w.r.t. s_t = h_{t-1} W_h
    tmp = np.empty((B, H), dtype=A.dtype)
    ds = np.empty((B, 2 * H), dtype=A.dtype)
    for t in reversed(range(T)):
        a, da = A[t], dA[t]
        r, u, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        dr, du, dn = da[:, :H], da[:, H : 2 * H], da[:, 2 * H :]
        dh = dH[t]
        h_prev = Hs[t - 1] if t else h0
        np.subtract(h_prev, n, out=du)  # dL/du = dh * (h_{t-1} - n)
        du *= dh
        np.subtract(1, u, out=dn)  # dL/dn = dh * (1 - u), then through tanh
        dn *= dh
        np.multiply(n, n, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dn *= tmp
        np.multiply(dn, Sn[t], out=dr)  # dL/dr = dn * s_n
        np.subtract(1, a[:, : 2 * H], out=ds)  # sigmoid' = s (1 - s)
        ds *= a[:, : 2 * H]
        da[:, : 2 * H] *= ds
        dS[t, :, : 2 * H] = da[:, : 2 * H]
        np.multiply(dn, r, out=dS[t, :, 2 * H :])
        if t:
            dH[t - 1] += dS[t] @ W_h.T
            np.multiply(dh, u, out=tmp)
            dH[t - 1] += tmp
    dh0 = dS[0] @ W_h.T + dH[0] * A[0, :, H : 2 * H]  # (B, H)
    return dA, _weight_grad(h0, Hs, dS), (dh0,)
