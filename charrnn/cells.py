"""Recurrent cells, forward and backward over a whole sequence, batched.

Shapes: T time steps, B batch, H hidden size, G = gates * H (1 rnn, 3 gru, 4 lstm).
Every cell receives the input projections of all steps at once, A (T, B, G) with
A[t] = x_t W_x + b, so a step costs one (B, H) @ (H, G) product plus elementwise math.
The GRU and LSTM `forward` overwrite A with the activated gates, which `backward` needs.

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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from charrnn import backend
from charrnn.config import ACTIVATIONS, CELLS  # noqa: F401  (re-exported: the cells and activations there are)

# The blocks of a cell's (..., G) pre-activations, in order; each block is H wide. The
# vanilla RNN has one block, the candidate h itself. Every slice of a gate row goes through
# `split_gates`, so this is the one place the order is written down.
GATE_ORDER: dict[str, tuple[str, ...]] = {"rnn": ("h",), "gru": ("r", "u", "n"), "lstm": ("i", "f", "o", "g")}
GATES = {cell: len(order) for cell, order in GATE_ORDER.items()}
assert tuple(GATE_ORDER) == CELLS
_LSTM_SIGMOIDS = 3  # i, f, o are sigmoids and come first; g (tanh) is last: one tanh serves all four


def split_gates(a: np.ndarray, cell: str) -> tuple[np.ndarray, ...]:
    """Views of the gate blocks of a (..., G) array, in GATE_ORDER[cell]."""
    k = GATES[cell]
    H = a.shape[-1] // k
    return tuple(a[..., j * H : (j + 1) * H] for j in range(k))


def gate_index(cell: str, name: str) -> int:
    """Position of gate `name` among the cell's blocks (for slicing one gate out)."""
    try:
        return GATE_ORDER[cell].index(name)
    except ValueError:
        raise ValueError(f"a {cell} cell has no gate {name!r} (it has {', '.join(GATE_ORDER[cell])})") from None


@dataclass
class Trace:
    """What a cell's forward pass keeps, by name: what `backward` needs, and what a caller may
    look at. Arrays are (T, B, ·) with T the steps run; `Hs0[t]` is h_{t-1}, `Hs0[t + 1]` is h_t.

    gates:  (T, B, G) activated gate values in GATE_ORDER (GRU, LSTM); None for the RNN
    Cs0:    (T + 1, B, H) cell states with c_0 in front (LSTM)
    TCs:    (T, B, H) tanh(c_t) (LSTM)
    S:      (T, B, G) recurrent products h_{t-1} W_h (GRU: backward needs s_n)
    """

    cell: str
    Hs0: np.ndarray
    W_h: np.ndarray
    activation: str = "tanh"
    gates: np.ndarray | None = None
    Cs0: np.ndarray | None = None
    TCs: np.ndarray | None = None
    S: np.ndarray | None = None

    @property
    def hs(self) -> np.ndarray:
        """(T, B, H) hidden states h_1 .. h_T."""
        return self.Hs0[1:]

    @property
    def cs(self) -> np.ndarray | None:
        """(T, B, H) cell states c_1 .. c_T (LSTM), else None."""
        return None if self.Cs0 is None else self.Cs0[1:]

    def gate(self, name: str) -> np.ndarray:
        """(T, B, H) activated values of one gate, by name (i, f, o, g; r, u, n)."""
        if self.gates is None:
            raise ValueError(f"a {self.cell} cell has no gates")
        return split_gates(self.gates, self.cell)[gate_index(self.cell, name)]


_HALF = np.float32(0.5)  # exact in float32 and float64; a NumPy scalar costs less per call than a Python float


def sigmoid_(x: np.ndarray) -> np.ndarray:
    """In-place logistic sigmoid, as 0.5 * (1 + tanh(x / 2)): no overflow, no exp."""
    np.multiply(x, _HALF, out=x)
    np.tanh(x, out=x)
    np.multiply(x, _HALF, out=x)
    np.add(x, _HALF, out=x)
    return x


@lru_cache(maxsize=16)
def _sigmoid_as_tanh(G: int, n_sigmoid: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Row vectors (G,) that turn one tanh over a whole gate row into sigmoids on the first
    n_sigmoid columns: s = half * tanh(half * a) + shift, with half = 1/2 and shift = 1/2 there,
    half = 1 and shift = 0 on the tanh columns."""
    half = np.ones(G, dtype=dtype)
    half[:n_sigmoid] = 0.5
    shift = np.zeros(G, dtype=dtype)
    shift[:n_sigmoid] = 0.5
    half.flags.writeable = shift.flags.writeable = False  # cached and shared by every call
    return half, shift


def forward(
    cell: str,
    A: np.ndarray,
    W_h: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None = None,
    activation: str = "tanh",
) -> tuple[np.ndarray, tuple[np.ndarray, ...], Trace]:
    """Run `cell` over all T steps. Returns (Hs (T, B, H), final state, trace).

    The final state is (h_T,) or, for the LSTM, (h_T, c_T). A may be overwritten.
    """
    if A.dtype == np.float32 and (fast := backend.active()) is not None:  # compiled cells (backend.py)
        return fast.forward(cell, A, W_h, h0, c0, activation)
    if cell == "lstm":
        assert c0 is not None
        return _lstm_forward(A, W_h, h0, c0)
    if cell == "gru":
        return _gru_forward(A, W_h, h0)
    return _rnn_forward(A, W_h, h0, activation)


def backward(dH: np.ndarray, trace: Trace) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Returns (dA (T, B, G), dW_h (H, G), gradient of the initial state). dH is overwritten."""
    if dH.dtype == np.float32 and (fast := backend.active()) is not None:
        return fast.backward(dH, trace)
    if trace.cell == "lstm":
        return _lstm_backward(dH, trace)
    if trace.cell == "gru":
        return _gru_backward(dH, trace)
    return _rnn_backward(dH, trace)


class Step:
    """One cell advanced a time step at a time for B rows (sampling), in arrays made once.

    Write the step's input projection into `a` (B, G), then call with the current state: the
    new state, (h,) or (h, c), comes back in arrays of this object's that the call after next
    overwrites (copy them to keep them). Same arithmetic as `forward`. At one row every NumPy
    call costs about a microsecond whatever it computes, so the gate views are sliced here once
    rather than at every step: a GRU character costs a fifth less (benchmarks/sample_step.py)."""

    def __init__(self, cell: str, W_h: np.ndarray, B: int, activation: str = "tanh") -> None:
        H, G = W_h.shape
        self.cell, self.W_h, self.activation = cell, W_h, activation
        self.a = np.empty((B, G), dtype=W_h.dtype)
        self.s = np.empty_like(self.a)  # h_{t-1} W_h
        self.scratch = (np.empty((B, H), dtype=W_h.dtype), np.empty((B, H), dtype=W_h.dtype))
        n = 2 if cell == "lstm" else 1
        self.outs = [tuple(np.empty((B, H), dtype=W_h.dtype) for _ in range(n)) for _ in range(2)]
        self.views = (_lstm_views(self.a) if cell == "lstm" else _gru_views(self.a, self.s) if cell == "gru"
                      else ())

    def __call__(self, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        new = self.outs[0]
        self.outs.reverse()  # the state returned now is next call's input, so the next writes the other
        np.matmul(state[0], self.W_h, out=self.s)
        tmp, tmp2 = self.scratch
        if self.cell == "lstm":
            _lstm_cell(self.a, self.s, state[1], new[1], tmp, new[0], tmp2, self.views)
        elif self.cell == "gru":
            _gru_cell(self.a, self.s, state[0], new[0], tmp, self.views)
        else:
            _rnn_cell(self.a, self.s, new[0], self.activation)
        return new


def _with_h0(h0: np.ndarray, T: int) -> np.ndarray:
    """(T + 1, B, H) with h0 in front: [t] is h_{t-1}, [t + 1] is h_t, [1:] are the outputs."""
    Hs0 = np.empty((T + 1, *h0.shape), dtype=h0.dtype)
    Hs0[0] = h0
    return Hs0


def _weight_grad(Hs0: np.ndarray, dS: np.ndarray) -> np.ndarray:
    """dW_h = sum_t h_{t-1}^T dS_t as one product instead of T small ones."""
    H = Hs0.shape[2]
    return Hs0[:-1].reshape(-1, H).T @ dS.reshape(-1, dS.shape[2])  # (H, G)


# ---------------------------------------------------------------- vanilla RNN


def _rnn_forward(A, W_h, h0, activation):
    T, B, H = A.shape
    Hs0 = _with_h0(h0, T)
    s = np.empty((B, H), dtype=A.dtype)  # h_{t-1} W_h
    for t in range(T):
        np.matmul(Hs0[t], W_h, out=s)
        _rnn_cell(A[t], s, Hs0[t + 1], activation)
    return Hs0[1:], (Hs0[-1],), Trace("rnn", Hs0, W_h, activation)


def _rnn_cell(a, s, h, activation):
    """h_t = f(a + s) with s = h_{t-1} W_h."""
    np.add(a, s, out=h)
    if activation == "relu":
        np.maximum(h, 0, out=h)
    else:
        np.tanh(h, out=h)


def _rnn_backward(dH, tr):
    Hs0, W_h, activation = tr.Hs0, tr.W_h, tr.activation
    Hs = Hs0[1:]
    T, B, H = Hs.shape
    W_hT = np.ascontiguousarray(W_h.T)  # (H, H): a plain product is faster than a transposed one
    dA = dH  # (T, B, H), reused in place
    dh = np.empty((B, H), dtype=Hs.dtype)  # dL/dh_{t-1} through W_h
    tmp = np.empty((B, H), dtype=Hs.dtype)
    for t in reversed(range(T)):
        da = dA[t]
        if activation == "relu":
            np.greater(Hs[t], 0, out=tmp)
        else:
            np.multiply(Hs[t], Hs[t], out=tmp)  # tanh' = 1 - h^2
            np.subtract(1, tmp, out=tmp)
        da *= tmp
        if t:
            np.matmul(da, W_hT, out=dh)
            dA[t - 1] += dh
    dh0 = dA[0] @ W_hT  # (B, H)
    return dA, _weight_grad(Hs0, dA), (dh0,)


# ---------------------------------------------------------------- LSTM


def _lstm_forward(A, W_h, h0, c0):
    T, B, G = A.shape
    H = G // 4
    Hs0, Cs0 = _with_h0(h0, T), _with_h0(c0, T)  # [t] is h_{t-1}, c_{t-1}; [t + 1] is h_t, c_t
    TCs = np.empty((T, B, H), dtype=A.dtype)  # tanh(c_t)
    s = np.empty((B, G), dtype=A.dtype)  # h_{t-1} W_h
    ig = np.empty((B, H), dtype=A.dtype)
    for t in range(T):
        np.matmul(Hs0[t], W_h, out=s)
        _lstm_cell(A[t], s, Cs0[t], Cs0[t + 1], TCs[t], Hs0[t + 1], ig)
    return Hs0[1:], (Hs0[-1], Cs0[-1]), Trace("lstm", Hs0, W_h, gates=A, Cs0=Cs0, TCs=TCs)


def _lstm_views(a):
    """What _lstm_cell slices out of a (B, 4H): the sigmoid-as-tanh rows and the gate blocks."""
    H = a.shape[1] // 4
    return (*_sigmoid_as_tanh(a.shape[1], _LSTM_SIGMOIDS * H, a.dtype), *split_gates(a, "lstm"))


def _lstm_cell(a, s, c_prev, c, tc, h, ig, views=None):
    """Gates from a + s (B, 4H), left activated in a; writes c_t, tanh(c_t) and h_t.
    ig is scratch; views: _lstm_views(a), when a's array is used again and again."""
    half, shift, i, f, o, g = views or _lstm_views(a)
    a += s
    a *= half  # one tanh over all four blocks: sigmoid(x) = (1 + tanh(x / 2)) / 2
    np.tanh(a, out=a)
    a *= half
    a += shift
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=ig)
    c += ig
    np.tanh(c, out=tc)
    np.multiply(o, tc, out=h)


def _lstm_backward(dH, tr):
    A, Hs0, Cs0, TCs, W_h = tr.gates, tr.Hs0, tr.Cs0, tr.TCs, tr.W_h
    T, B, G = A.shape
    H = G // 4
    W_hT = np.ascontiguousarray(W_h.T)  # (4H, H): a plain product is faster than a transposed one
    dA = np.empty_like(A)  # (T, B, 4H)
    dc = np.zeros((B, H), dtype=A.dtype)  # dL/dc_t carried backwards
    dh = np.empty((B, H), dtype=A.dtype)  # dL/dh_t: from above plus from step t + 1
    tmp = np.empty((B, H), dtype=A.dtype)
    d = np.empty((B, G), dtype=A.dtype)  # activation derivatives
    for t in reversed(range(T)):
        a, da = A[t], dA[t]
        i, f, o, g = split_gates(a, "lstm")
        di, df, do, dg = split_gates(da, "lstm")
        tc = TCs[t]
        c_prev = Cs0[t]
        if t == T - 1:
            dh[...] = dH[t]
        else:
            np.matmul(dA[t + 1], W_hT, out=dh)
            dh += dH[t]
        np.multiply(dh, tc, out=do)  # dL/do = dh * tanh(c)
        np.multiply(do, tc, out=tmp)  # dc += dh * o * (1 - tanh(c)^2) = o * (dh - do * tanh(c))
        np.subtract(dh, tmp, out=tmp)
        tmp *= o
        dc += tmp
        np.multiply(dc, g, out=di)
        np.multiply(dc, c_prev, out=df)
        np.multiply(dc, i, out=dg)
        dc *= f  # now dL/dc_{t-1}
        np.multiply(a, a, out=d)  # sigmoid' = s - s^2, tanh' = 1 - g^2
        n = _LSTM_SIGMOIDS * H
        np.subtract(a[:, :n], d[:, :n], out=d[:, :n])
        np.subtract(1, d[:, n:], out=d[:, n:])
        da *= d
    dh0 = dA[0] @ W_hT  # (B, H)
    return dA, _weight_grad(Hs0, dA), (dh0, dc)


# ---------------------------------------------------------------- GRU


def _gru_forward(A, W_h, h0):
    T, B, G = A.shape
    H = G // 3
    Hs0 = _with_h0(h0, T)
    S = np.empty((T, B, G), dtype=A.dtype)  # s_t = h_{t-1} W_h; backward needs s_n
    tmp = np.empty((B, H), dtype=A.dtype)
    for t in range(T):
        np.matmul(Hs0[t], W_h, out=S[t])
        _gru_cell(A[t], S[t], Hs0[t], Hs0[t + 1], tmp)
    return Hs0[1:], (Hs0[-1],), Trace("gru", Hs0, W_h, gates=A, S=S)


def _gru_views(a, s):
    """What _gru_cell slices out of a and s (B, 3H): r and u side by side, r, u, n; s's r and u, s_n."""
    H = a.shape[1] // 3
    return (a[:, : 2 * H], *split_gates(a, "gru"), s[:, : 2 * H], split_gates(s, "gru")[2])


def _gru_cell(a, s, h_prev, h, tmp, views=None):
    """Gates [r, u, n] from a (B, 3H) and s = h_{t-1} W_h, left activated in a; writes h_t.
    tmp is scratch; views: _gru_views(a, s), when their arrays are used again and again."""
    ru, r, u, n, s_ru, s_n = views or _gru_views(a, s)
    ru += s_ru  # r and u: both sigmoids, side by side
    sigmoid_(ru)
    np.multiply(r, s_n, out=tmp)
    n += tmp
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=tmp)  # h_t = n + u * (h_{t-1} - n)
    tmp *= u
    np.add(n, tmp, out=h)


def _gru_backward(dH, tr):
    A, Hs0, S, W_h = tr.gates, tr.Hs0, tr.S, tr.W_h
    T, B, G = A.shape
    H = G // 3
    W_hT = np.ascontiguousarray(W_h.T)  # (3H, H): a plain product is faster than a transposed one
    dA = np.empty_like(A)  # (T, B, 3H) gradients w.r.t. A_t = x_t W_x + b
    dS = np.empty_like(A)  # (T, B, 3H) gradients w.r.t. s_t = h_{t-1} W_h
    dh = np.empty((B, H), dtype=A.dtype)  # dL/dh_t
    carry = np.zeros((B, H), dtype=A.dtype)  # u_{t+1} * dL/dh_{t+1}, the direct path to h_t
    tmp = np.empty((B, H), dtype=A.dtype)
    ds = np.empty((B, 2 * H), dtype=A.dtype)
    for t in reversed(range(T)):
        a, da = A[t], dA[t]
        r, u, n = split_gates(a, "gru")
        dr, du, dn = split_gates(da, "gru")
        h_prev = Hs0[t]
        if t == T - 1:
            dh[...] = dH[t]
        else:
            np.matmul(dS[t + 1], W_hT, out=dh)
            dh += dH[t]
            dh += carry
        np.subtract(h_prev, n, out=du)  # dL/du = dh * (h_{t-1} - n)
        du *= dh
        np.multiply(dh, u, out=carry)
        np.subtract(dh, carry, out=dn)  # dL/dn = dh * (1 - u), then through tanh
        np.multiply(n, n, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dn *= tmp
        s_t, ds_t = split_gates(S[t], "gru"), split_gates(dS[t], "gru")
        np.multiply(dn, s_t[2], out=dr)  # dL/dr = dn * s_n
        dru = da[:, : 2 * H]  # r and u side by side
        np.subtract(1, a[:, : 2 * H], out=ds)  # sigmoid' = s (1 - s)
        ds *= a[:, : 2 * H]
        dru *= ds
        dS[t, :, : 2 * H] = dru
        np.multiply(dn, r, out=ds_t[2])
    dh0 = dS[0] @ W_hT + carry  # (B, H)
    return dA, _weight_grad(Hs0, dS), (dh0,)
