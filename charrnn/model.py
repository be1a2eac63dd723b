"""The model: an explicit stack of recurrent layers, a softmax output layer, and the loss.

The stack is a list of `Layer` specs (cell, input width, hidden size, direction) made from a
ModelConfig by `layer_specs`; parameter names and shapes, initialisation, counting, checkpoint
loading and the forward/backward loops all derive from it. Layer l's parameters, G = gates * H:
    W_x{l}  (n_in, G)  input weights; n_in = V for layer 0, whose rows are looked up by id (the
                       one-hot product x_t W_x written as indexing), the width below for the rest
    W_h{l}  (H, G)     recurrent weights
    b{l}    (G,)       bias
and on top, reading the last layer's outputs:
    W_y     (H, V)     output weights
    b_y     (V,)       output bias
Inputs and targets are time-major id arrays (T, B); logits are (T, B, V).

Per layer, a_t = x_t W_x + b for all steps at once, then the cell (charrnn.cells) runs over
them; a layer with `reverse` reads its input right to left and its outputs are flipped back
into reading order. Dropout (training only) multiplies each layer's outputs by a fixed mask.

Bidirectional models (cfg.bidirectional) have two layers per level l, one each way, both reading
the level below; the level's output is their concatenation [h→_t ; h←_t] (2H wide), which the
next level and the output layer read (W_y is then (2H, V)). The reverse layer's parameters are
named W_x{l}_rev, W_h{l}_rev, b{l}_rev. They fill in hidden characters: layer 0 has one input
row more than the vocabulary, id V = <MASK>, which the output never predicts.
Rows of a batch may have different lengths (`lengths`, lines padded at the end): a reverse layer
then reads each row from its own last character, so padding never reaches real positions.

Two objectives for bidirectional models (cfg.objective):
    masked     y_t from [h→_t ; h←_t]; only positions whose input is <MASK> are targets (~15 %)
    neighbors  y_t from [h→_{t-1} ; h←_{t+1}] (zeros past either end): the left-to-right stack has
               read up to t - 1 and the right-to-left one down to t + 1, so the character at t is
               never seen and every character is a target. Above layer 0 each direction reads only
               its own direction's layer below (`Layer.separate`): an upper layer reading
               [h→_t ; h←_t] would have seen t. `shift` and `unshift` are the output's input and
               its derivative.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from typing import cast

import numpy as np

from charrnn import backend, cells
from charrnn.config import ModelConfig, Objective

__all__ = ["ModelConfig", "Layer", "layer_specs", "param_shapes", "init_params", "forward", "backward",
           "Forward", "LayerRun", "Stepper", "cross_entropy", "token_nll", "loss_and_grads", "zero_state"]

Params = dict[str, np.ndarray]
State = list[tuple[np.ndarray, ...]]  # per layer: (h,) or, for the LSTM, (h, c); each (B, H)


@dataclass(frozen=True)
class Layer:
    """One recurrent layer of the stack."""

    index: int  # l: its place in the stack (0 reads the characters) and the suffix of its parameter names
    cell: str  # lstm | gru | rnn
    n_in: int  # input width: V for layer 0 (rows looked up by id), else the width of what it reads
    hidden: int  # H
    activation: str = "tanh"  # rnn only
    reverse: bool = False  # reads the sequence right to left
    separate: bool = False  # reads only its own direction's layer below (one stack per direction), not both

    @property
    def gates(self) -> int:
        return cells.GATES[self.cell]

    @property
    def lookup(self) -> bool:
        """Whether the input is character ids (one-hot rows looked up) rather than vectors."""
        return self.index == 0

    @property
    def state_size(self) -> int:
        """Arrays in its carried state: (h, c) for the LSTM, (h,) otherwise."""
        return 2 if self.cell == "lstm" else 1

    def names(self) -> tuple[str, str, str]:
        """Its parameter names: W_x, W_h, b (with _rev after the index for a right-to-left layer)."""
        suffix = f"{self.index}_rev" if self.reverse else f"{self.index}"
        return f"W_x{suffix}", f"W_h{suffix}", f"b{suffix}"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        G = self.gates * self.hidden
        W_x, W_h, b = self.names()
        return {W_x: (self.n_in, G), W_h: (self.hidden, G), b: (G,)}


def input_size(cfg: ModelConfig) -> int:
    """Rows of W_x0: the vocabulary, and <MASK> (id V) for a bidirectional model."""
    return cfg.vocab_size + 1 if cfg.bidirectional else cfg.vocab_size


def layer_specs(cfg: ModelConfig) -> list[Layer]:
    """The stack a config describes: `layers` levels of the same cell, each reading the level below;
    one layer per level, or a left-to-right and a right-to-left one when bidirectional (reading
    only their own direction below for the neighbors objective)."""
    directions = (False, True) if cfg.bidirectional else (False,)
    separate = cfg.objective == Objective.NEIGHBORS
    width = cfg.hidden_size * (1 if separate else len(directions))  # what a layer above layer 0 reads
    return [Layer(l, cfg.cell, input_size(cfg) if l == 0 else width, cfg.hidden_size, cfg.activation, reverse,
                  separate and l > 0)
            for l in range(cfg.layers) for reverse in directions]


def levels(stack: list[Layer]) -> list[list[int]]:
    """Positions in `stack` grouped by level (layers of one level read the same input)."""
    out: list[list[int]] = []
    for k, layer in enumerate(stack):
        if out and stack[out[-1][0]].index == layer.index:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def output_width(stack: list[Layer]) -> int:
    """Width of what the output layer reads: the top level's outputs side by side."""
    return sum(stack[k].hidden for k in levels(stack)[-1])


def param_shapes(cfg: ModelConfig, stack: list[Layer] | None = None) -> dict[str, tuple[int, ...]]:
    stack = stack if stack is not None else layer_specs(cfg)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in stack:
        shapes.update(layer.shapes())
    width = output_width(stack)
    if cfg.head:
        shapes["W_head"] = (width, cfg.head)
        shapes["b_head"] = (cfg.head,)
        width = cfg.head
    shapes["W_y"] = (width, cfg.vocab_size)
    shapes["b_y"] = (cfg.vocab_size,)
    return shapes


def textbook_param_count(cfg: ModelConfig) -> int:
    """(n_a + n_x) n_a + n_a per RNN layer, times 3 for a GRU, 4 for an LSTM; n_a n_y + n_y on top.

    Bidirectional: that per direction per layer, with n_x = V + 1 (<MASK>) at the bottom and 2 n_a
    above (n_a for the neighbors objective, one stack per direction); the output layer reads 2 n_a,
    or a head of n_z reads them (2 n_a n_z + n_z) and the output layer reads n_z."""
    n_a, n_y = cfg.hidden_size, cfg.vocab_size
    directions = 2 if cfg.bidirectional else 1
    below = 1 if cfg.objective == Objective.NEIGHBORS else directions  # neighbors: each direction its own stack
    total = 0
    for l in range(cfg.layers):
        n_x = (n_y + 1 if cfg.bidirectional else n_y) if l == 0 else below * n_a
        total += directions * cells.GATES[cfg.cell] * ((n_a + n_x) * n_a + n_a)
    if cfg.head:
        return total + directions * n_a * cfg.head + cfg.head + cfg.head * n_y + n_y
    return total + directions * n_a * n_y + n_y


def training_bytes(cfg: ModelConfig, batch: int, steps: int, optimizer_slots: int) -> int:
    """About how many bytes training takes: the parameters with their gradients, best copy, a
    clipping temporary and the optimizer's slots; per character of a batch, every layer's forward
    caches and backward temporaries, and the logits, probabilities and their gradient. In closed
    form, without a spec per layer: --layers may be a billion."""
    s = np.dtype(cfg.dtype).itemsize
    d, H, V = (2 if cfg.bidirectional else 1), cfg.hidden_size, cfg.vocab_size
    G = cells.GATES[cfg.cell] * H
    below = 1 if cfg.objective == Objective.NEIGHBORS else d  # what an upper layer reads, in units of H
    top = cfg.head or d * H  # what the output layer reads
    n_params = (d * ((input_size(cfg) + H + 1) * G + (cfg.layers - 1) * (below * H + H + 1) * G) + top * V + V
                + (d * H + 1) * cfg.head)
    per_char = 2 * d * cfg.layers * (2 * G + 4 * H) * s + 3 * cfg.head * s + V * (3 * s + 8)  # softmax: float64
    return (4 + optimizer_slots) * n_params * s + batch * steps * per_char


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))  # (n, n), sign fix makes it uniform over rotations


def init_params(cfg: ModelConfig, rng: np.random.Generator, stack: list[Layer] | None = None) -> Params:
    """Orthogonal recurrent blocks (identity for relu RNNs); layer 0's input rows N(0, 1),
    like an embedding, since a one-hot input selects one row; other weights N(0, 1/n_in);
    zero biases except the LSTM forget gate (1). Relu RNNs, whose identity recurrence adds
    the inputs up, keep small ones: N(0, 1/H) rows and output weights N(0, 0.01/H).

    Measured against the earlier N(0, 1/H) rows and 0.1/sqrt(H) output weights on
    tiny-shakespeare (LSTM-256, Adam 2e-3, B 32, T 64): mean loss over steps 200-225 fell
    from 2.49 to 1.93 (PyTorch's default init: 2.34); the GRU and RNN gain as much."""
    stack = stack if stack is not None else layer_specs(cfg)
    identity = cfg.cell == "rnn" and cfg.activation == "relu"  # h adds the inputs up: keep all small
    p: Params = {}
    for layer in stack:
        H, k, n_x = layer.hidden, layer.gates, layer.n_in
        W_x, W_h, b = layer.names()
        scale = 1.0 / np.sqrt(H if identity else 1) if layer.lookup else 1.0 / np.sqrt(n_x)
        p[W_x] = rng.standard_normal((n_x, k * H)) * scale
        if identity:
            p[W_h] = np.eye(H)
        else:
            p[W_h] = np.concatenate([_orthogonal(rng, H) for _ in range(k)], axis=1)
        p[b] = np.zeros(k * H)
        if layer.cell == "lstm":
            cells.split_gates(p[b], "lstm")[cells.gate_index("lstm", "f")][...] = 1.0  # forget gate starts open
    H_top = output_width(stack)
    if cfg.head:
        p["W_head"] = rng.standard_normal((H_top, cfg.head)) / np.sqrt(H_top)
        p["b_head"] = np.zeros(cfg.head)
        H_top = cfg.head
    p["W_y"] = rng.standard_normal((H_top, cfg.vocab_size)) / np.sqrt(H_top) * (0.1 if identity else 1.0)
    p["b_y"] = np.zeros(cfg.vocab_size)
    return {name: a.astype(cfg.dtype) for name, a in p.items()}


def zero_state(cfg: ModelConfig, batch: int, stack: list[Layer] | None = None) -> State:
    stack = stack if stack is not None else layer_specs(cfg)
    return [tuple(np.zeros((batch, layer.hidden), cfg.dtype) for _ in range(layer.state_size)) for layer in stack]


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


@dataclass
class LayerRun:
    """One layer's forward pass over a batch: what it read, what its cell kept, its dropout mask.

    `hs`, `cs` and `gate(name)` give (T, B, ·) arrays in reading order, also for a reversed layer."""

    layer: Layer
    inp: np.ndarray  # (T, B) ids for the lookup layer, else (T, B, n_in)
    trace: cells.Trace  # the cell's named intermediate values, in the order the cell ran
    mask: np.ndarray | None  # (T, B, H) dropout mask (already scaled), or None
    rows_reversed: np.ndarray | None = None  # (T, B) the reverse layer's reading order of rows of other lengths

    def _reading_order(self, a: np.ndarray) -> np.ndarray:
        return _flip(a, self.rows_reversed) if self.layer.reverse else a

    @property
    def hs(self) -> np.ndarray:
        """(T, B, H) the cell's outputs h_t, before dropout."""
        return self._reading_order(self.trace.hs)

    @property
    def cs(self) -> np.ndarray | None:
        """(T, B, H) LSTM cell states c_t, else None."""
        cs = self.trace.cs
        return None if cs is None else self._reading_order(cs)

    def gate(self, name: str) -> np.ndarray:
        """(T, B, H) activated values of gate `name` (see cells.GATE_ORDER)."""
        return self._reading_order(self.trace.gate(name))


@dataclass
class Forward:
    """What `forward` computed: logits, the final state of every layer, and each layer's run
    (for `backward`, and for anyone who wants to look at hidden states and gates)."""

    logits: np.ndarray  # (T, B, V)
    state: State  # per layer, the state after the last step (what the next chunk starts from)
    layers: list[LayerRun]
    x: np.ndarray  # (T, B) the input ids
    top: np.ndarray  # (T, B, H) the last level's outputs after dropout (shifted for the neighbors objective)
    lengths: np.ndarray | None = None  # (B,) real steps per row, when rows were padded
    head: np.ndarray | None = None  # (T, B, n_z) tanh(top W_head + b_head), when the model has a head

    @property
    def read(self) -> np.ndarray:
        """What the output layer read: the head's outputs, else the top level's."""
        return self.top if self.head is None else self.head


def reversal(lengths: np.ndarray | None, T: int) -> np.ndarray | None:
    """(T, B) time index that reverses each row within its own length (padding stays at the end),
    or None when every row is T long (a plain flip)."""
    if lengths is None or (lengths == T).all():
        return None
    t = np.arange(T)[:, None]
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _flip(a: np.ndarray, rows_reversed: np.ndarray | None) -> np.ndarray:
    """a (T, B, ...) in the other direction of time: a[::-1], or row by row when lengths differ.
    Its own inverse."""
    if rows_reversed is None:
        return a[::-1]
    return a[rows_reversed, np.arange(a.shape[1])]


def input_projection(layer: Layer, params: Params, inp: np.ndarray) -> np.ndarray:
    """A (T, B, G) with A[t] = x_t W_x + b, for inputs in the order the cell reads them."""
    W_x, _, b_name = layer.names()
    W, b = params[W_x], params[b_name]
    if layer.lookup:
        T, B = inp.shape
        if T * B > len(W):
            return (W + b)[inp]  # (T, B, G) row lookup == one-hot product; b added to V rows, not T*B
        A = W[inp]  # fewer ids than rows (a short prime or batch): look up, then add b
        A += b
        return A
    T, B = inp.shape[:2]
    A = (inp.reshape(T * B, -1) @ W).reshape(T, B, -1)  # (T, B, G)
    A += b
    return A


def layer_forward(
    layer: Layer,
    params: Params,
    inp: np.ndarray,
    state: tuple[np.ndarray, ...],
    dropout: float = 0.0,
    dropout_rng: np.random.Generator | None = None,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], LayerRun]:
    """One layer over all T steps: its outputs (T, B, H) in reading order (after dropout when
    `dropout_rng` is given), its final state, and its run for `layer_backward`. `lengths` (B,):
    how many steps of each row are real (a reverse layer starts each row at its end)."""
    rows_reversed = reversal(lengths, len(inp)) if layer.reverse else None
    A = input_projection(layer, params, _flip(inp, rows_reversed) if layer.reverse else inp)
    c0 = state[1] if layer.cell == "lstm" else None
    Hs, final, trace = cells.forward(layer.cell, A, params[layer.names()[1]], state[0], c0, layer.activation)
    if layer.reverse:
        Hs = _flip(Hs, rows_reversed)
    mask = None
    if dropout_rng is not None and dropout > 0:
        mask = (dropout_rng.random(Hs.shape) >= dropout).astype(Hs.dtype)  # (T, B, H)
        mask *= 1 / (1 - dropout)
        Hs = Hs * mask
    return Hs, tuple(s.copy() for s in final), LayerRun(layer, inp, trace, mask, rows_reversed)


def layer_backward(
    run: LayerRun, params: Params, dH: np.ndarray
) -> tuple[Params, np.ndarray | None, tuple[np.ndarray, ...]]:
    """Given dL/d(outputs) (T, B, H) in reading order (overwritten), the layer's parameter
    gradients, dL/d(inputs) (T, B, n_in) in reading order (None for the lookup layer), and the
    gradient of its initial state."""
    layer = run.layer
    W_x, W_h, b = layer.names()
    if run.mask is not None:
        dH *= run.mask
    rev = run.rows_reversed
    dA, dW_h, dstate = cells.backward(_flip(dH, rev) if layer.reverse else dH, run.trace)
    inp = _flip(run.inp, rev) if layer.reverse else run.inp  # in the order the cell read it, as dA is
    T, B = dA.shape[:2]
    dA2 = dA.reshape(T * B, -1)  # (T*B, G)
    grads: Params = {W_h: dW_h}
    if layer.lookup:
        grads[W_x] = scatter_rows(inp.reshape(-1), dA2, layer.n_in)
        grads[b] = grads[W_x].sum(axis=0)  # every row of dA2 went to exactly one row
        return grads, None, dstate
    grads[W_x] = inp.reshape(T * B, -1).T @ dA2
    grads[b] = dA2.sum(axis=0)
    dX = (dA2 @ params[W_x].T).reshape(T, B, -1)  # (T, B, n_in)
    return grads, (_flip(dX, rev) if layer.reverse else dX), dstate


def forward(
    params: Params,
    cfg: ModelConfig,
    x: np.ndarray,
    state: State | None = None,
    dropout_rng: np.random.Generator | None = None,
    stack: list[Layer] | None = None,
    lengths: np.ndarray | None = None,
) -> Forward:
    """Logits (T, B, V) for ids x (T, B), the final state, and every layer's run (in the
    order of the stack). Dropout is applied only when `dropout_rng` is given (training).
    `lengths` (B,): real steps per row, for right-to-left layers over padded rows."""
    _keep_freed_memory()
    stack = stack if stack is not None else layer_specs(cfg)
    T, B = x.shape
    if state is None:
        state = zero_state(cfg, B, stack)
    inp: np.ndarray = x
    outs: list[np.ndarray] = []  # the outputs of the level below, one per layer
    new_state: State = []
    runs = []
    for level in levels(stack):
        below, outs = outs, []
        for i, k in enumerate(level):
            src = below[i] if stack[k].separate else inp  # its own direction's layer below, or the whole level
            out, final, run = layer_forward(stack[k], params, src, state[k], cfg.dropout, dropout_rng, lengths)
            outs.append(out)
            new_state.append(final)
            runs.append(run)
        inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)  # (T, B, sum of H)
    if cfg.objective == Objective.NEIGHBORS:
        inp = shift(inp, _real(lengths, T))
    head = None
    if cfg.head:  # z = tanh(top W_head + b_head): the two directions meet before the output
        head = inp.reshape(T * B, -1) @ params["W_head"]
        head += params["b_head"]
        head = np.tanh(head, out=head).reshape(T, B, -1)  # (T, B, n_z)
    logits = ((inp if head is None else head).reshape(T * B, -1) @ params["W_y"]).reshape(T, B, -1)  # (T, B, V)
    logits += params["b_y"]
    return Forward(logits, new_state, runs, x, inp, lengths, head)


def _real(lengths: np.ndarray | None, T: int) -> np.ndarray | None:
    """(T, B, 1) 1 at each row's real steps and 0 at its padding, or None when no row is padded."""
    if lengths is None or (lengths == T).all():
        return None
    return (np.arange(T)[:, None] < lengths[None, :])[..., None]


def shift(top: np.ndarray, real: np.ndarray | None = None) -> np.ndarray:
    """The neighbors objective's output input: [h→_{t-1} ; h←_{t+1}] at each t, from
    top = [h→_t ; h←_t] (T, B, 2H); zeros where t - 1 or t + 1 is past the end of the row. `real`
    (T, B, 1) marks padded rows' real steps: a right-to-left layer reaches the padding after
    reading the whole row, so the last real step must not read it."""
    H = top.shape[2] // 2
    if real is not None:
        top = top * real
    s = np.zeros_like(top)
    s[1:, :, :H] = top[:-1, :, :H]
    s[:-1, :, H:] = top[1:, :, H:]
    return s


def unshift(ds: np.ndarray, real: np.ndarray | None = None) -> np.ndarray:
    """dL/d(top) from dL/d(shift(top, real)): the shift's transpose (each value moved back to where
    it came from; none to padding)."""
    H = ds.shape[2] // 2
    d = np.zeros_like(ds)
    d[:-1, :, :H] = ds[1:, :, :H]
    d[1:, :, H:] = ds[:-1, :, H:]
    if real is not None:
        d *= real
    return d


def backward(params: Params, cfg: ModelConfig, dlogits: np.ndarray, fwd: Forward) -> tuple[Params, State]:
    """Gradients of every parameter, and of the initial state, given dL/dlogits (T, B, V)."""
    T, B, V = dlogits.shape
    dlog2 = dlogits.reshape(T * B, V)
    grads: Params = {
        "W_y": fwd.read.reshape(T * B, -1).T @ dlog2,  # (H, V)
        "b_y": dlog2.sum(axis=0),  # (V,)
    }
    dtop = (dlog2 @ params["W_y"].T).reshape(T, B, -1)  # (T, B, width of what the output layer read)
    if fwd.head is not None:  # d tanh(a) = (1 - z²) da
        da = (dtop * (1 - fwd.head * fwd.head)).reshape(T * B, -1)
        grads["W_head"] = fwd.top.reshape(T * B, -1).T @ da  # (2H, n_z)
        grads["b_head"] = da.sum(axis=0)
        dtop = (da @ params["W_head"].T).reshape(T, B, -1)  # (T, B, width of the top level)
    dH: np.ndarray | None = unshift(dtop, _real(fwd.lengths, T)) if cfg.objective == Objective.NEIGHBORS else dtop
    dstate: State = [()] * len(fwd.layers)
    parts: list[np.ndarray] = []  # dL/d(each layer's outputs) of the level, when they read separate inputs
    for level in reversed(levels([run.layer for run in fwd.layers])):
        if not parts:  # each layer's columns of the level's output
            assert dH is not None  # only the lookup level, which is at the bottom, returns none
            widths = np.cumsum([fwd.layers[k].layer.hidden for k in level])[:-1]
            parts = [dH] if len(level) == 1 else [np.ascontiguousarray(p) for p in np.split(dH, widths, axis=2)]
        dX, below = None, []
        for k, part in zip(level, parts, strict=True):
            run = fwd.layers[k]
            layer_grads, dX_k, dstate[k] = layer_backward(run, params, part)
            grads.update(layer_grads)
            if run.layer.separate:
                assert dX_k is not None
                below.append(dX_k)  # to its own direction's layer below
            else:
                dX = dX_k if dX is None else dX + dX_k  # both directions read the same input
        dH, parts = dX, below
    return grads, dstate


class Stepper:
    """Advance B streams one character at a time, for sampling: the same arithmetic as
    `forward` with T = 1, without its caches and per-call set-up, in arrays made once
    (`cells.Step`). Ids in `banned` get logit -inf (never chosen). `state` is the latest
    state, in arrays that later steps overwrite: copy it to keep it."""

    def __init__(self, params: Params, cfg: ModelConfig, state: State, banned: list[int] | tuple[int, ...] = ()
                 ) -> None:
        stack = layer_specs(cfg)
        if any(layer.reverse for layer in stack):
            raise ValueError("a right-to-left layer cannot be run one step at a time")
        self.cfg, self.state = cfg, list(state)  # the caller's list stays as it was
        # plain tuples, since this runs once per generated character
        self.layers: list[tuple[bool, np.ndarray, np.ndarray, str, np.ndarray, str]] = []
        for layer in stack:
            W_x, W_h, b = (params[name] for name in layer.names())
            self.layers.append((layer.lookup, W_x, b, layer.cell, W_h, layer.activation))
        self.W_y, self.b_y = params["W_y"], params["b_y"].copy()
        self.b_y[list(banned)] = -np.inf
        self._make_arrays(len(state[0][0]))

    def _make_arrays(self, B: int) -> None:
        self.steps = [cells.Step(cell, W_h, B, activation) for _, _, _, cell, W_h, activation in self.layers]
        self.logits = np.empty((B, len(self.b_y)), dtype=self.b_y.dtype)
        self.row = self.steps[0].a[0] if B == 1 else None  # one stream: its input row, filled without a lookup

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Logits (B, V) of the character after ids (B,), in an array the next call overwrites;
        the state moves on by one step."""
        h = ids
        for k, ((lookup, W_x, b, *_), step) in enumerate(zip(self.layers, self.steps)):  # noqa: B905 (same length)
            # At one row every NumPy call costs about a microsecond, so one stream's first layer adds
            # the bias straight from its row of W_x (a view): two calls fewer than a lookup and an add.
            if lookup and self.row is not None:
                np.add(W_x[h[0]], b, out=self.row)  # (G,)
            elif lookup:
                np.take(W_x, h, axis=0, out=step.a)  # (B, G): the one-hot product as a row lookup
                np.add(step.a, b, out=step.a)
            else:
                np.matmul(h, W_x, out=step.a)  # (B, G)
                np.add(step.a, b, out=step.a)
            self.state[k] = step(self.state[k])
            h = self.state[k][0]
        np.matmul(h, self.W_y, out=self.logits)  # (B, V)
        np.add(self.logits, self.b_y, out=self.logits)
        return self.logits

    def keep(self, rows: np.ndarray) -> None:
        """Drop the other streams (rows: a boolean mask or indices into the current batch)."""
        self.state = [tuple(s[rows] for s in layer) for layer in self.state]
        self._make_arrays(len(self.state[0][0]))


def scatter_rows(ids: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """out[k] = sum of rows[j] where ids[j] == k, for k < n: the gradient of a row lookup.

    For a small n this is the one-hot product onehot(ids)^T rows, which BLAS does fast;
    for a large n (thousands of CJK characters) sorting and `np.add.reduceat`, whose
    cost does not grow with n."""
    if rows.dtype == np.float32 and (fast := backend.active()) is not None:  # one compiled pass (fast.py)
        return cast("np.ndarray", fast.scatter_rows(ids, rows, n))
    if n <= 256:
        onehot = (ids[None, :] == np.arange(n)[:, None]).astype(rows.dtype)  # (n, N)
        return onehot @ rows
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # first of each run
    out = np.zeros((n, rows.shape[1]), dtype=rows.dtype)
    out[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


def _softmax_nll(z: np.ndarray, yf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn logits z (N, V) into unnormalised probabilities in place; returns -log p(y) (N,)
    and each row's normaliser (N,)."""
    N = len(z)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    total = z.sum(axis=1)  # (N,)
    p_y = z[np.arange(N), yf] / total  # (N,)
    return -np.log(np.maximum(p_y, np.finfo(z.dtype).tiny)), total


def token_nll(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log p(y) in nats at every position (T, B): the per-character loss. `logits` is kept."""
    T, B, V = logits.shape
    nll, _ = _softmax_nll(logits.reshape(T * B, V).copy(), y.reshape(-1))
    return nll.reshape(T, B)


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
    nll, total = _softmax_nll(z, yf)
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
    lengths: np.ndarray | None = None,
) -> tuple[float, Params, State]:
    """One training pass: mean loss, gradients, and the final state to carry forward."""
    fwd = forward(params, cfg, x, state, dropout_rng, lengths=lengths)
    loss, dlogits, _ = cross_entropy(fwd.logits, y, mask)
    assert dlogits is not None
    grads, _ = backward(params, cfg, dlogits, fwd)
    return loss, grads, fwd.state
