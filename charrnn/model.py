"""Stacked recurrent layers, a softmax output layer, and the loss.

Parameters are a dict of named arrays; for layer l (0-based), with G = gates * H:
    W_x{l}  (n_x, G)   input weights; n_x = V for layer 0 (its rows are looked up by id,
                       which is the one-hot product x_t W_x written as indexing), H above
    W_h{l}  (H, G)     recurrent weights
    b{l}    (G,)       bias
    W_y     (H, V)     output weights
    b_y     (V,)       output bias
Inputs and targets are time-major id arrays (T, B); logits are (T, B, V).
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from charrnn import cells
from charrnn.errors import CharrnnError

Params = dict[str, np.ndarray]
State = list[tuple[np.ndarray, ...]]  # per layer: (h,) or, for the LSTM, (h, c); each (B, H)


@dataclass
class ModelConfig:
    vocab_size: int  # V: kept characters + <UNK> + <EOS>
    cell: str = "lstm"  # lstm | gru | rnn
    hidden_size: int = 256  # H, the same in every layer
    layers: int = 2  # stacked recurrent layers
    activation: str = "tanh"  # rnn only: tanh | relu
    dropout: float = 0.0  # dropout on each layer's output while training; 0 disables
    dtype: str = "float32"  # float32 for speed, float64 for gradient checks

    def __post_init__(self) -> None:
        problems = []
        if self.cell not in cells.CELLS:
            problems.append(f"--cell must be one of {', '.join(cells.CELLS)}, not {self.cell!r}")
        if self.activation not in cells.ACTIVATIONS:
            problems.append(f"--activation must be tanh or relu, not {self.activation!r}")
        if self.hidden_size < 1:
            problems.append(f"--hidden-size must be at least 1, not {self.hidden_size}")
        if self.layers < 1:
            problems.append(f"--layers must be at least 1, not {self.layers}")
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), not {self.dropout}")
        if self.dtype not in ("float32", "float64"):
            problems.append(f"--dtype must be float32 or float64, not {self.dtype!r}")
        if self.vocab_size < 3:
            problems.append(f"vocabulary size must be at least 3, not {self.vocab_size}")
        if problems:
            raise CharrnnError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def gates(self) -> int:
        return cells.GATES[self.cell]


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    H, V, G = cfg.hidden_size, cfg.vocab_size, cfg.gates * cfg.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for l in range(cfg.layers):
        shapes[f"W_x{l}"] = (V if l == 0 else H, G)
        shapes[f"W_h{l}"] = (H, G)
        shapes[f"b{l}"] = (G,)
    shapes["W_y"] = (H, V)
    shapes["b_y"] = (V,)
    return shapes


def textbook_param_count(cfg: ModelConfig) -> int:
    """(n_a + n_x) n_a + n_a per RNN layer, times 3 for a GRU, 4 for an LSTM; n_a n_y + n_y on top."""
    n_a, n_y = cfg.hidden_size, cfg.vocab_size
    total = 0
    for l in range(cfg.layers):
        n_x = n_y if l == 0 else n_a
        total += cfg.gates * ((n_a + n_x) * n_a + n_a)
    return total + n_a * n_y + n_y


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))  # (n, n), sign fix makes it uniform over rotations


def init_params(cfg: ModelConfig, rng: np.random.Generator) -> Params:
    """Orthogonal recurrent blocks (identity for relu RNNs); layer 0's input rows N(0, 1),
    like an embedding, since a one-hot input selects one row; other weights N(0, 1/n_in);
    zero biases except the LSTM forget gate (1). Relu RNNs, whose identity recurrence adds
    the inputs up, keep small ones: N(0, 1/H) rows and output weights N(0, 0.01/H).

    Measured against the earlier N(0, 1/H) rows and 0.1/sqrt(H) output weights on
    tiny-shakespeare (LSTM-256, Adam 2e-3, B 32, T 64): mean loss over steps 200-225 fell
    from 2.49 to 1.93 (PyTorch's default init: 2.34); the GRU and RNN gain as much."""
    H, V, k = cfg.hidden_size, cfg.vocab_size, cfg.gates
    identity = cfg.cell == "rnn" and cfg.activation == "relu"  # h adds the inputs up: keep all small
    p: Params = {}
    for l in range(cfg.layers):
        n_x = V if l == 0 else H
        scale = 1.0 / np.sqrt(H if identity else 1) if l == 0 else 1.0 / np.sqrt(n_x)
        p[f"W_x{l}"] = rng.standard_normal((n_x, k * H)) * scale
        if identity:
            p[f"W_h{l}"] = np.eye(H)
        else:
            p[f"W_h{l}"] = np.concatenate([_orthogonal(rng, H) for _ in range(k)], axis=1)
        p[f"b{l}"] = np.zeros(k * H)
        if cfg.cell == "lstm":
            p[f"b{l}"][H : 2 * H] = 1.0  # forget gate starts open
    p["W_y"] = rng.standard_normal((H, V)) / np.sqrt(H) * (0.1 if identity else 1.0)
    p["b_y"] = np.zeros(V)
    return {name: a.astype(cfg.dtype) for name, a in p.items()}


def zero_state(cfg: ModelConfig, batch: int) -> State:
    n = 2 if cfg.cell == "lstm" else 1
    return [tuple(np.zeros((batch, cfg.hidden_size), cfg.dtype) for _ in range(n)) for _ in range(cfg.layers)]


_malloc_tuned = False


def _keep_freed_memory() -> None:
    """Let glibc keep freed blocks for reuse instead of returning them to the kernel.

    By default blocks over 128 KB are mmap'ed and unmapped, and the heap top is trimmed
    past 2x that, so every training step page-faults its temporaries back in (LSTM-256:
    ~30 MB, ~4,000 faults and ~14 ms of system time per step, a quarter of the step).
    Raising both thresholds (to 32 MB, glibc's own ceiling for the first, and 256 MB)
    removes that. Once per process, Linux only; skipped when the user set MALLOC_* or
    GLIBC_TUNABLES themselves."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    if not sys.platform.startswith("linux") or any(k.startswith(("MALLOC_", "GLIBC_TUNABLES")) for k in os.environ):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 256 << 20)


def forward(
    params: Params,
    cfg: ModelConfig,
    x: np.ndarray,
    state: State | None = None,
    dropout_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, State, Any]:
    """Logits (T, B, V) for ids x (T, B), the final state, and a cache for `backward`.

    Dropout is applied only when `dropout_rng` is given (training)."""
    _keep_freed_memory()
    T, B = x.shape
    if state is None:
        state = zero_state(cfg, B)
    inp: np.ndarray = x
    new_state: State = []
    layer_caches = []
    for l in range(cfg.layers):
        W_x, W_h, b = params[f"W_x{l}"], params[f"W_h{l}"], params[f"b{l}"]
        if l == 0 and T * B > len(W_x):
            A = (W_x + b)[x]  # (T, B, G) row lookup == one-hot product; b added to V rows, not T*B
        elif l == 0:  # fewer ids than rows (a short prime or batch): look up, then add b
            A = W_x[x]  # (T, B, G)
            A += b
        else:
            A = (inp.reshape(T * B, -1) @ W_x).reshape(T, B, -1)  # (T, B, G)
            A += b
        c0 = state[l][1] if cfg.cell == "lstm" else None
        Hs, final, cache = cells.forward(cfg.cell, A, W_h, state[l][0], c0, cfg.activation)
        new_state.append(tuple(s.copy() for s in final))
        mask = None
        if dropout_rng is not None and cfg.dropout > 0:
            mask = (dropout_rng.random(Hs.shape) >= cfg.dropout).astype(Hs.dtype)  # (T, B, H)
            mask *= 1 / (1 - cfg.dropout)
            Hs = Hs * mask
        layer_caches.append((inp, cache, mask))
        inp = Hs
    logits = (inp.reshape(T * B, -1) @ params["W_y"]).reshape(T, B, -1)  # (T, B, V)
    logits += params["b_y"]
    return logits, new_state, (x, inp, layer_caches)


class Stepper:
    """Advance B streams one character at a time, for sampling: the same arithmetic as
    `forward` with T = 1, without its caches and per-call set-up. Ids in `banned` get
    logit -inf (never chosen)."""

    def __init__(self, params: Params, cfg: ModelConfig, state: State, banned: list[int] = ()) -> None:
        self.cfg, self.state = cfg, state
        self.layers = [(params[f"W_x{l}"], params[f"W_h{l}"], params[f"b{l}"]) for l in range(cfg.layers)]
        self.W_y, self.b_y = params["W_y"], params["b_y"].copy()
        self.b_y[list(banned)] = -np.inf

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Logits (B, V) of the character after ids (B,); the state moves on by one step."""
        new_state: State = []
        h = None
        for l, (W_x, W_h, b) in enumerate(self.layers):
            if l == 0:
                a = W_x[ids]  # (B, G): the one-hot product as a row lookup (a copy)
                a += b
            else:
                a = h @ W_x
                a += b
            new_state.append(cells.step(self.cfg.cell, a, W_h, self.state[l], self.cfg.activation))
            h = new_state[-1][0]
        self.state = new_state
        logits = h @ self.W_y
        logits += self.b_y
        return logits

    def keep(self, rows: np.ndarray) -> None:
        """Drop the other streams (rows: a boolean mask or indices into the current batch)."""
        self.state = [tuple(s[rows] for s in layer) for layer in self.state]


def backward(params: Params, cfg: ModelConfig, dlogits: np.ndarray, cache: Any) -> tuple[Params, State]:
    """Gradients of every parameter, and of the initial state, given dL/dlogits (T, B, V)."""
    x, top, layer_caches = cache
    T, B, V = dlogits.shape
    dlog2 = dlogits.reshape(T * B, V)
    grads: Params = {
        "W_y": top.reshape(T * B, -1).T @ dlog2,  # (H, V)
        "b_y": dlog2.sum(axis=0),  # (V,)
    }
    dH = (dlog2 @ params["W_y"].T).reshape(T, B, -1)  # (T, B, H)
    dstate: State = [()] * cfg.layers
    for l in reversed(range(cfg.layers)):
        inp, cache_l, mask = layer_caches[l]
        if mask is not None:
            dH *= mask
        dA, dW_h, dstate[l] = cells.backward(cfg.cell, dH, cache_l)
        dA2 = dA.reshape(T * B, -1)  # (T*B, G)
        grads[f"W_h{l}"] = dW_h
        if l == 0:
            grads["W_x0"] = scatter_rows(x.reshape(-1), dA2, cfg.vocab_size)
            grads["b0"] = grads["W_x0"].sum(axis=0)  # every row of dA2 went to exactly one row
        else:
            grads[f"W_x{l}"] = inp.reshape(T * B, -1).T @ dA2
            grads[f"b{l}"] = dA2.sum(axis=0)
            dH = (dA2 @ params[f"W_x{l}"].T).reshape(T, B, -1)
    return grads, dstate


def scatter_rows(ids: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """out[k] = sum of rows[j] where ids[j] == k, for k < n: the gradient of a row lookup.

    For a small n this is the one-hot product onehot(ids)^T rows, which BLAS does fast;
    for a large n (thousands of CJK characters) sorting and `np.add.reduceat`, whose
    cost does not grow with n."""
    if n <= 256:
        onehot = (ids[None, :] == np.arange(n)[:, None]).astype(rows.dtype)  # (n, N)
        return onehot @ rows
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # first of each run
    out = np.zeros((n, rows.shape[1]), dtype=rows.dtype)
    out[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


def cross_entropy(
    logits: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None, grad: bool = True
) -> tuple[float, np.ndarray | None, float]:
    """Mean cross-entropy in nats over the positions where mask is 1.

    Returns (loss, dL/dlogits or None, number of positions). `logits` is overwritten
    with the probabilities when grad is True."""
    T, B, V = logits.shape
    z = logits.reshape(T * B, V)
    yf = y.reshape(-1)
    if not grad:
        z = z.copy()
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    total = z.sum(axis=1)  # (T*B,)
    p_y = z[np.arange(T * B), yf] / total  # (T*B,)
    nll = -np.log(np.maximum(p_y, np.finfo(z.dtype).tiny))
    if mask is None:
        n = float(T * B)
        loss = float(nll.sum(dtype=np.float64)) / n
    else:
        m = mask.reshape(-1)
        n = float(m.sum())
        loss = float((nll * m).sum(dtype=np.float64)) / max(n, 1.0)
    if not grad:
        return loss, None, n
    w = np.full(T * B, 1 / n, dtype=z.dtype) if mask is None else (m / max(n, 1.0)).astype(z.dtype)  # (T*B,)
    z *= (w / total)[:, None]  # dL/dz = w * (softmax(z) - onehot(y)), one pass
    z[np.arange(T * B), yf] -= w
    return loss, logits, n


def loss_and_grads(
    params: Params,
    cfg: ModelConfig,
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray | None = None,
    state: State | None = None,
    dropout_rng: np.random.Generator | None = None,
) -> tuple[float, Params, State]:
    """One training pass: mean loss, gradients, and the final state to carry forward."""
    logits, new_state, cache = forward(params, cfg, x, state, dropout_rng)
    loss, dlogits, _ = cross_entropy(logits, y, mask)
    assert dlogits is not None
    grads, _ = backward(params, cfg, dlogits, cache)
    return loss, grads, new_state
