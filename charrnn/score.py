"""Scoring a text: the model's log-probability of every character, in reading order.

`log_probs` is the one scorer: `charrnn eval`, the validation loss during training, and any
view of per-character surprise use it. Work is batched for speed, and the results are put back
where each character stands in the text:
- lines: every id is predicted (a line's first character from <EOS>, its <EOS> from the whole
  line); lines are batched by length. Characters past `max_len` in a line (training's cut) are
  not scored: NaN.
- stream: ids[0] is context only (NaN); the rest is cut into B consecutive pieces scored side
  by side, each carrying its state chunk to chunk from a zero state at its start; the last piece
  also takes the few characters left over, so every character after the first is scored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from charrnn import model
from charrnn.config import Mode, ModelConfig, Objective
from charrnn.data import Batch, encode_lines, line_starts, lines_batch, masked_batch
from charrnn.errors import CharrnnError

if TYPE_CHECKING:
    from charrnn.checkpoint import Checkpoint

LINE_BATCH_CELLS = 65536  # T * B of one lines batch at most: bounds the logits' memory


def log_probs(
    params: model.Params,
    cfg: ModelConfig,
    mode: Mode,
    ids: np.ndarray,
    starts: np.ndarray | None = None,
    max_len: int = 64,
    batch_size: int = 64,
) -> np.ndarray:
    """log p(ids[i] | what came before it) in nats for every i: (len(ids),) float64, NaN where
    nothing is predicted. `starts` (lines): start offsets of the <EOS>-terminated lines; `max_len`:
    lines are scored up to this many characters and their <EOS> (stream: characters per chunk)."""
    out = np.full(len(ids), np.nan)
    if mode == Mode.LINES:
        assert starts is not None
        _score_lines(params, cfg, ids, starts, max_len, out)
    elif len(ids) >= 2:
        _score_stream(params, cfg, ids, max_len, batch_size, out)
    return out


def line_groups(ids: np.ndarray, starts: np.ndarray, max_len: int) -> Iterator[np.ndarray]:
    """Line numbers in batches of similar length (less padding), lines cut at max_len as in
    training, T * B of a batch bounded by LINE_BATCH_CELLS."""
    n = len(starts)
    lengths = np.minimum(np.diff(np.r_[starts, len(ids)]), max_len + 1)
    order = np.argsort(lengths, kind="stable")
    k = 0
    while k < n:
        B = max(1, min(256, LINE_BATCH_CELLS // int(lengths[order[min(k + 255, n - 1)]])))
        yield order[k : k + B]
        k += B


def _score_lines(params, cfg, ids, starts, max_len, out) -> None:
    for which in line_groups(ids, starts, max_len):
        x, y, mask = lines_batch(ids, starts, which, max_len)
        nll = model.token_nll(model.forward(params, cfg, x).logits, y)  # (T, B)
        pos = starts[which][None, :] + np.arange(len(x))[:, None]  # (T, B) where each target stands
        scored = mask > 0
        out[pos[scored]] = -nll[scored]


def _score_stream(params, cfg, ids, seq_len, batch_size, out) -> None:
    n = len(ids) - 1  # characters predicted
    B = max(1, min(batch_size, n // max(seq_len, 1)))
    L = n // B  # inputs per piece; the last piece takes the n - B * L left over too
    state = None
    for k in range(0, L, seq_len):
        T = min(seq_len, L - k)
        pos = np.arange(B)[None, :] * L + k + np.arange(T)[:, None]  # (T, B) input positions
        fwd = model.forward(params, cfg, ids[pos].astype(np.int32), state)
        state = fwd.state
        out[pos + 1] = -model.token_nll(fwd.logits, ids[pos + 1].astype(np.int32))
    rest = np.arange(B * L, n)  # after the last piece, which goes on over them
    if len(rest):
        last = [tuple(s[-1:] for s in layer) for layer in state] if state is not None else None
        fwd = model.forward(params, cfg, ids[rest, None].astype(np.int32), last)
        out[rest + 1] = -model.token_nll(fwd.logits, ids[rest + 1, None].astype(np.int32))[:, 0]


def _truncate(mode: Mode, ids: np.ndarray, starts: np.ndarray, max_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_chars` characters: whole lines up to that many in lines mode, the first ones in stream mode."""
    if max_chars and len(ids) > max_chars:
        if mode == Mode.LINES:
            n = max(1, int(np.searchsorted(starts, max_chars)))  # the lines that start before the limit
            if n < len(starts):
                ids, starts = ids[: starts[n]], starts[:n]
        else:
            ids = ids[:max_chars]
    return ids, starts


def masked_batches(mode: Mode, ids: np.ndarray, starts: np.ndarray, seq_len: int) -> Iterator[Batch]:
    """The text as batches for a bidirectional model, in a fixed order: lines of similar length
    together (cut at seq_len as in training), or consecutive chunks of seq_len characters."""
    if mode == Mode.LINES:
        for which in line_groups(ids, starts, seq_len):
            yield Batch(*lines_batch(ids, starts, which, seq_len))
        return
    n = len(ids) // seq_len
    chunks = ids[: n * seq_len].reshape(n, seq_len).T.astype(np.int32)  # (T, n) consecutive chunks
    if len(ids) > n * seq_len:  # the rest, as a shorter chunk of its own
        yield Batch(ids[n * seq_len :, None].astype(np.int32), ids[n * seq_len :, None].astype(np.int32), None)
    B = max(1, LINE_BATCH_CELLS // seq_len)
    for k in range(0, n, B):
        yield Batch(chunks[:, k : k + B], chunks[:, k : k + B], None)


def masked_loss(
    params: model.Params,
    cfg: ModelConfig,
    mode: Mode,
    ids: np.ndarray,
    starts: np.ndarray,
    seq_len: int = 64,
    rate: float = 0.15,
    seed: int = 0,
    max_chars: int = 0,
) -> float:
    """Mean loss in nats per target character of a bidirectional model (the hidden ones, or every one
    for the neighbors objective), characters hidden as in training (spans, `rate`) but by a fixed
    seed: the same figure every time."""
    ids, starts = _truncate(mode, ids, starts, max_chars)
    total, count = 0.0, 0.0
    for k, batch in enumerate(masked_batches(mode, ids, starts, seq_len)):
        mb = masked_batch(batch, mode, rate, np.random.default_rng([seed, 4, k]), model.input_size(cfg) - 1,
                          every=cfg.objective == Objective.NEIGHBORS)
        logits = model.forward(params, cfg, mb.x, lengths=mb.lengths).logits
        loss, _, m = model.cross_entropy(logits, mb.y, mb.weights, grad=False)
        total += loss * m
        count += m
    return total / max(count, 1.0)


def evaluate(
    params: model.Params,
    cfg: ModelConfig,
    mode: Mode,
    ids: np.ndarray,
    starts: np.ndarray,
    seq_len: int = 64,
    max_chars: int = 0,
    batch_size: int = 64,
) -> float:
    """Mean loss in nats/char over `ids` (what `log_probs` scores), on at most `max_chars`
    characters: whole lines up to that many in lines mode, the first ones in stream mode."""
    ids, starts = _truncate(mode, ids, starts, max_chars)
    lp = log_probs(params, cfg, mode, ids, starts, seq_len, batch_size)
    scored = lp[~np.isnan(lp)]
    return float(-scored.sum()) / len(scored)


def encode_text(ck: Checkpoint, text: str, name: str = "the text") -> tuple[np.ndarray, np.ndarray, int]:
    """A text as `ck` reads it: (ids, line starts, characters not in its vocabulary). Lines: every line
    with its <EOS>; stream: one run of characters, at least 2 (the first is context only)."""
    if ck.meta.mode == Mode.LINES:
        ids, unk = encode_lines(text, ck.vocab)
        return ids, line_starts(ids), int(unk)
    ids, unk = ck.vocab.encode(text)
    if len(ids) < 2:
        raise CharrnnError(f"{name}: needs at least 2 characters to score")
    return ids, np.zeros(0, np.int64), int(unk)


def text_loss(ck: Checkpoint, ids: np.ndarray, starts: np.ndarray) -> float:
    """The best weights' mean loss on encoded text, what `charrnn eval` and `Model.score` report: nats
    per character, or for a bidirectional model per target character (every one for neighbors, the
    hidden ones for masked; hidden as in training, by a fixed seed)."""
    t = ck.meta.train
    if ck.cfg.bidirectional:
        return masked_loss(ck.sampling_params, ck.cfg, ck.meta.mode, ids, starts, t.seq_len, t.mask_rate, seed=0)
    return evaluate(ck.sampling_params, ck.cfg, ck.meta.mode, ids, starts, seq_len=t.seq_len)
