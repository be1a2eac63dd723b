"""Filling in blanked characters, and one vector per line.

Bidirectional models read the blanks as <MASK> and predict them from both sides (from the states
beside a blank for the neighbors objective, from those that read <MASK> there for the masked one).
With several blanks, the one the model is surest of is filled first and the text is read again
with it in place, until none is left (n blanks: n passes).

Forward models can fill blanks too, more slowly, by scoring whole texts: every candidate for a
blank is put in and the text's total log-probability compared, which is exact for one blank
(its posterior over the characters). For several blanks a beam of the `beam` best partial
fillings moves left to right, each scored on the text up to the next blank, and on all of it
after the last.

Texts are read as the model was trained: a line model reads [<EOS>, text, <EOS>] (a forward
model scores the text and its end); a stream model reads the text as running text (a forward
one after a newline, as sampling starts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from charrnn import model
from charrnn.checkpoint import Checkpoint
from charrnn.config import Mode
from charrnn.errors import CharrnnError
from charrnn.vocab import EOS, UNK, Vocab

BEAM = 8  # partial fillings kept by a forward model's beam search
MAX_CELLS = 1 << 17  # T * B of one batch at most


@dataclass
class Blank:
    position: int  # in the text
    char: str = ""  # what it was filled with
    candidates: list[tuple[str, float]] = field(default_factory=list)  # best first, with probabilities


@dataclass
class Filled:
    text: str  # with every blank filled
    blanks: list[Blank]  # in text order
    order: list[int]  # indices into blanks, in the order they were filled
    unknown: int = 0  # characters of the text not in the vocabulary (read as <UNK>)


def blank_positions(text: str, blank: str) -> list[int]:
    if len(blank) != 1:
        raise CharrnnError(f"--blank must be a single character, not {blank!r}")
    positions = [i for i, ch in enumerate(text) if ch == blank]
    if not positions:
        raise CharrnnError(f"no blank ({blank!r}) in the text: mark each missing character with it")
    return positions


def context_limit(ck: Checkpoint) -> int | None:
    """The longest text the model was trained to read at once (None: no limit)."""
    if ck.meta.mode == Mode.LINES or ck.cfg.bidirectional:
        return ck.meta.train.seq_len
    return None


def _start_id(vocab: Vocab) -> int:
    nl = vocab.id_of("\n")
    return nl if nl != UNK else EOS


def _choices(vocab: Vocab) -> np.ndarray:
    """Ids a blank may be filled with: every character, not <UNK> or <EOS>."""
    return np.arange(2, len(vocab))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def fill(ck: Checkpoint, text: str, blank: str = "_", top: int = 5, beam: int = BEAM) -> Filled:
    """Every `blank` in `text` replaced by the model's choice."""
    positions = blank_positions(text, blank)
    limit = context_limit(ck)
    if limit is not None and len(text) > limit:
        raise CharrnnError(f"the text is {len(text)} characters long; this model reads at most {limit} at once "
                           "(its --seq-len): fill a shorter piece")
    ids, unknown = ck.vocab.encode(text)
    ids = ids.astype(np.int64)
    ids[positions] = UNK  # placeholders, never read as such
    blanks = [Blank(p) for p in positions]
    if ck.cfg.bidirectional:
        order = _fill_bidirectional(ck, ids, blanks, top)
    else:
        order = _fill_forward(ck, ids, blanks, top, beam)
    chars = list(text)
    for b in blanks:
        chars[b.position] = b.char
    return Filled("".join(chars), blanks, order, unknown - len(positions))


def _bidirectional_frame(ck: Checkpoint, ids: np.ndarray) -> tuple[np.ndarray, int]:
    """What a bidirectional model reads for a text, and where the text starts in it."""
    if ck.meta.mode == Mode.LINES:
        return np.r_[EOS, ids, EOS], 1
    return ids.copy(), 0


def _fill_bidirectional(ck: Checkpoint, ids: np.ndarray, blanks: list[Blank], top: int) -> list[int]:
    seq, offset = _bidirectional_frame(ck, ids)
    mask_id = model.input_size(ck.cfg) - 1
    choices = _choices(ck.vocab)
    left = list(range(len(blanks)))
    order = []
    while left:
        x = seq.copy()
        x[[blanks[j].position + offset for j in left]] = mask_id
        logits = model.forward(ck.sampling_params, ck.cfg, x[:, None].astype(np.int32)).logits[:, 0]  # (T, V)
        lp = _log_softmax(logits[[blanks[j].position + offset for j in left]][:, choices])  # (blanks left, C)
        j_best = int(np.argmax(lp.max(axis=1)))  # the blank the model is surest of
        j = left.pop(j_best)
        p = np.exp(lp[j_best])
        ranked = np.argsort(-p, kind="stable")
        blanks[j].char = ck.vocab.token(int(choices[ranked[0]]))
        blanks[j].candidates = [(ck.vocab.token(int(choices[r])), float(p[r])) for r in ranked[:top]]
        seq[blanks[j].position + offset] = choices[ranked[0]]
        order.append(j)
    return order


def sequence_log_probs(ck: Checkpoint, seqs: np.ndarray, upto: int | None = None) -> np.ndarray:
    """Total log-probability under a forward model of each text in seqs (N, L), counting the
    characters before position `upto` (None: all of them, and a line model's <EOS> after them)."""
    N, L = seqs.shape
    if ck.meta.mode == Mode.LINES:
        x = np.concatenate([np.full((N, 1), EOS), seqs], axis=1)  # (N, L + 1)
        y = np.concatenate([seqs, np.full((N, 1), EOS)], axis=1)
    else:
        x = np.concatenate([np.full((N, 1), _start_id(ck.vocab)), seqs[:, :-1]], axis=1)  # (N, L)
        y = seqs
    n = y.shape[1] if upto is None else upto
    out = np.empty(N)
    B = max(1, MAX_CELLS // x.shape[1])
    for k in range(0, N, B):
        xb, yb = x[k : k + B, :n].T.astype(np.int32), y[k : k + B, :n].T.astype(np.int32)  # (n, b)
        if n == 0:
            out[k : k + B] = 0.0
            continue
        nll = model.token_nll(model.forward(ck.sampling_params, ck.cfg, xb).logits, yb)  # (n, b)
        out[k : k + B] = -nll.astype(np.float64).sum(axis=0)
    return out


def _fill_forward(ck: Checkpoint, ids: np.ndarray, blanks: list[Blank], top: int, beam: int) -> list[int]:
    choices = _choices(ck.vocab)
    C = len(choices)
    beams = ids[None, :].copy()  # (K, L) partial fillings, best first
    for j, b in enumerate(blanks):
        expanded = np.repeat(beams, C, axis=0)  # (K * C, L)
        expanded[:, b.position] = np.tile(choices, len(beams))
        upto = blanks[j + 1].position if j + 1 < len(blanks) else None
        scores = sequence_log_probs(ck, expanded, upto)
        best_beam = scores[:C]  # the expansions of the best partial filling: this blank's candidates
        p = np.exp(best_beam - best_beam.max())
        p /= p.sum()
        ranked = np.argsort(-p, kind="stable")
        b.candidates = [(ck.vocab.token(int(choices[r])), float(p[r])) for r in ranked[:top]]
        keep = np.argsort(-scores, kind="stable")[:beam]
        beams = expanded[keep]
    for b in blanks:
        b.char = ck.vocab.token(int(beams[0, b.position]))
    return list(range(len(blanks)))


# ---------------------------------------------------------------- one blank in each of many texts


def padded_batches(frames: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Texts of similar length together, at most MAX_CELLS steps a batch: (their indices in
    `frames`, x (T, b) int32 padded with <EOS> at the end, lengths (b,))."""
    lengths = np.array([len(f) for f in frames])
    order = np.argsort(lengths, kind="stable")
    k = 0
    while k < len(order):
        B = max(1, MAX_CELLS // int(lengths[order[min(k + 1023, len(order) - 1)]]))
        group = order[k : k + B]
        x = np.full((int(lengths[group].max()), len(group)), EOS, dtype=np.int32)  # (T, b)
        for col, i in enumerate(group):
            x[: lengths[i], col] = frames[i]
        yield group, x, lengths[group]
        k += B


def fill_each(ck: Checkpoint, texts: Sequence[np.ndarray], positions: Sequence[int]) -> np.ndarray:
    """The model's choice for one blank per text (ids, and the blank's position in each), batched:
    one pass for a bidirectional model, every candidate scored for a forward one."""
    choices = _choices(ck.vocab)
    out = np.empty(len(texts), dtype=np.int64)
    if not ck.cfg.bidirectional:
        C = len(choices)
        per = max(1, MAX_CELLS // (C * (max(len(t) for t in texts) + 1)))  # texts per forward pass
        order = np.argsort([len(t) for t in texts], kind="stable")
        for k in range(0, len(order), per):
            group = order[k : k + per]
            by_len: dict[int, list[int]] = {}
            for i in group:
                by_len.setdefault(len(texts[i]), []).append(int(i))
            for idx in by_len.values():
                seqs = np.repeat(np.stack([texts[i] for i in idx]), C, axis=0)  # (len(idx) * C, L)
                rows = np.arange(len(seqs))
                seqs[rows, np.repeat([positions[i] for i in idx], C)] = np.tile(choices, len(idx))
                scores = sequence_log_probs(ck, seqs).reshape(len(idx), C)
                out[idx] = choices[scores.argmax(axis=1)]
        return out
    mask_id = model.input_size(ck.cfg) - 1
    frames, where = [], []
    for t, p in zip(texts, positions, strict=True):
        f, offset = _bidirectional_frame(ck, t)
        f[p + offset] = mask_id
        frames.append(f)
        where.append(p + offset)
    for group, x, lengths in padded_batches(frames):
        at = np.array(where)[group]
        logits = model.forward(ck.sampling_params, ck.cfg, x, lengths=lengths).logits  # (T, b, V)
        picked = logits[at, np.arange(len(group))][:, choices]  # (b, C)
        out[group] = choices[picked.argmax(axis=1)]
    return out


# ---------------------------------------------------------------- embeddings


def embed(ck: Checkpoint, texts: Sequence[np.ndarray]) -> np.ndarray:
    """One vector per text (ids), float32 (n, width): a forward model's top-layer state after the
    last character; a bidirectional model's [h→ at the last character ; h← at the first]."""
    bi = ck.cfg.bidirectional
    if bi:
        frames = [_bidirectional_frame(ck, t)[0] for t in texts]
    elif ck.meta.mode == Mode.LINES:
        frames = [np.r_[EOS, t] for t in texts]
    else:
        frames = [np.r_[_start_id(ck.vocab), t] for t in texts]
    first = 1 if bi and ck.meta.mode == Mode.LINES else 0
    width = model.output_width(model.layer_specs(ck.cfg))
    out = np.empty((len(texts), width), dtype=np.float32)
    for group, x, lengths in padded_batches(frames):
        fwd = model.forward(ck.sampling_params, ck.cfg, x, lengths=lengths)
        cols = np.arange(len(group))
        last = lengths - (2 if bi and ck.meta.mode == Mode.LINES else 1)  # the last character
        top = [run for run in fwd.layers if run.layer.index == ck.cfg.layers - 1]
        parts = [top[0].hs[last, cols]]
        if bi:
            parts.append(top[1].hs[np.full(len(group), first), cols])
        out[group] = np.concatenate(parts, axis=1)
    return out


def blank_one_each(mode: Mode, ids: np.ndarray, starts: np.ndarray, seq_len: int, seed: int = 0,
                   spread: int = 1000) -> tuple[list[np.ndarray], list[int]]:
    """Texts with one character to blank in each, by a fixed seed: every line (its characters,
    cut at seq_len), or `spread` windows of seq_len characters evenly through running text, the
    blank at a random place in each."""
    rng = np.random.default_rng([seed, 5])
    texts: list[np.ndarray] = []
    if mode == Mode.LINES:
        for s, e in zip(starts, np.r_[starts[1:], len(ids)], strict=True):
            line = ids[s : min(e - 1, s + seq_len)].astype(np.int64)  # without its <EOS>
            if len(line):
                texts.append(line)
    else:
        W = min(seq_len, len(ids))
        for s in np.unique(np.linspace(0, len(ids) - W, min(spread, len(ids) - W + 1)).astype(np.int64)):
            texts.append(ids[s : s + W].astype(np.int64))
    return texts, [int(rng.integers(len(t))) for t in texts]


def accuracy(ck: Checkpoint, mode: Mode, ids: np.ndarray, starts: np.ndarray, seed: int = 0) -> tuple[float, int]:
    """Fill accuracy with one character blanked per text (see blank_one_each): (fraction right, texts)."""
    texts, positions = blank_one_each(mode, ids, starts, ck.meta.train.seq_len, seed)
    if not texts:
        return float("nan"), 0
    truth = np.array([t[p] for t, p in zip(texts, positions, strict=True)])
    return float((fill_each(ck, texts, positions) == truth).mean()), len(texts)
