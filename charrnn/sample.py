"""Generating text: n samples advance together as one batch, one character per step.

Next-character choice from logits z (V,): greedy argmax when the temperature is 0;
otherwise p = softmax(z / temperature), restricted to the k most likely characters
(top-k) and/or to the smallest set whose probability reaches top_p (nucleus), renormalised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from charrnn import cells, model
from charrnn.checkpoint import Checkpoint, hash_each
from charrnn.config import Mode, ModelConfig
from charrnn.errors import CharrnnError, OptionError
from charrnn.model import Params
from charrnn.vocab import EOS, UNK, Vocab

CHUNK = 4096  # generated steps per output block; prime characters run through the model at a time
LIVE_CHUNK = 64  # steps per block when the text is shown as it is generated
BATCH = 1000  # samples generated together at most: `sample -n` of any size runs in batches of this many


def check_options(
    temperature: float, top_k: int, top_p: float, n: int = 1, length: int = 1, seed: int | None = None
) -> None:
    """Refuse sampling options that cannot work, all at once, naming each option."""
    p = []
    if not temperature >= 0 or not np.isfinite(temperature):
        p.append(f"--temperature must be 0 or more, not {temperature}")
    if top_k < 0:
        p.append(f"--top-k must be 0 (off) or more, not {top_k}")
    if not 0 < top_p <= 1:
        p.append(f"--top-p must be in (0, 1], not {top_p}")
    if n < 1:
        p.append(f"--num must be at least 1, not {n}")
    if length < 1:
        p.append(f"--length must be at least 1, not {length}")
    if seed is not None and seed < 0:
        p.append(f"--seed must be 0 or more, not {seed}")
    if p:
        raise OptionError("; ".join(p))


def sampling_bytes(cfg: ModelConfig, rows: int, length: int, prime_len: int, kept: bool = True) -> int:
    """About how many bytes generating `rows` samples together takes: per row, the Stepper's
    arrays (the gates, h W_h, two sets of state and two of scratch per layer; cells.Step), the
    state it started from and the logits (the choice works in float64); the prime's run one
    chunk at a time; and, unless shown as generated (`kept` False), the ids and texts of every row."""
    s = np.dtype(cfg.dtype).itemsize
    H, V, G = cfg.hidden_size, cfg.vocab_size, cells.GATES[cfg.cell] * cfg.hidden_size
    step = rows * (cfg.layers * (2 * G + 8 * H) * s + V * (s + 3 * 8 + 1))
    prime = min(prime_len, CHUNK) * (cfg.layers * (2 * G + 4 * H) + V) * s  # caches and logits of one chunk
    texts = rows * (4 * length + 2 * 4 * (prime_len + length)) if kept else 0  # ids; str up to 4 bytes a char
    return step + prime + texts


def pick(
    logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> np.ndarray:
    """One id per row of logits (B, V); -inf logits are never chosen."""
    if temperature == 0:
        return logits.argmax(axis=1)
    if len(logits) == 1 and top_k == 0 and top_p == 1:
        return _pick_one(logits[0], rng, temperature)
    z = logits.astype(np.float64)  # (B, V)
    z -= np.maximum.reduce(z, axis=1, keepdims=True)  # before dividing: a tiny temperature gives -inf, not NaN
    _cool(z, temperature)
    V = z.shape[1]
    if 0 < top_k < V:
        kth = np.partition(z, V - top_k, axis=1)[:, V - top_k, None]  # (B, 1)
        z[z < kth] = -np.inf  # the maximum (0) always stays
    p = np.exp(z, out=z)  # unnormalised: the cumulative sum below is scaled by its last entry
    if top_p < 1:
        p /= p.sum(axis=1, keepdims=True)
        order = np.argsort(-p, axis=1, kind="stable")
        ps = np.take_along_axis(p, order, axis=1)
        drop = np.cumsum(ps, axis=1) - ps >= top_p  # mass before this one already reaches top_p
        np.put_along_axis(p, order, np.where(drop, 0.0, ps), axis=1)
    cdf = np.add.accumulate(p, axis=1)  # (B, V); ufunc methods: one step costs microseconds here
    u = rng.random((len(p), 1))
    u *= cdf[:, -1:]
    i = np.add.reduce(cdf <= u, axis=1, dtype=np.intp)  # first index whose cdf passes u
    return np.minimum(i, V - 1, out=i)


def _cool(z: np.ndarray, temperature: float) -> None:
    """z /= temperature in place, for logits less their maximum (so nothing turns into NaN)."""
    if temperature != 1:
        with np.errstate(over="ignore"):  # a tiny temperature sends all but the maximum to -inf, as it should
            z /= temperature


def _pick_one(z32: np.ndarray, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
    """`pick` for one row (V,) with nothing but the softmax at a temperature above 0: the same
    arithmetic and the same draw, in half the calls (one stream spends a fifth of each character here)."""
    z = np.subtract(z32, z32[z32.argmax()], dtype=np.float64)  # (V,): as float64, less the maximum (or NaN)
    _cool(z, temperature)
    cdf = np.add.accumulate(np.exp(z, out=z))
    i = np.count_nonzero(cdf <= rng.random() * cdf[-1])  # first index whose cdf passes u
    return np.array([min(i, len(z) - 1)], dtype=np.intp)


@dataclass
class Samples:
    texts: list[str]
    generated: int = 0  # samples generated in all (more than len(texts) with --novel)
    novel: int = -1  # how many of those were not lines of the training text (-1: not checked)
    repeats: int = 0  # texts added to top up when too few new ones turned up (seen, empty or repeated)


def generate(
    params: Params,
    cfg: ModelConfig,
    vocab: Vocab,
    mode: Mode,
    n: int = 1,
    length: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    prime: str = "",
    rng: np.random.Generator | None = None,
    allow_unk: bool = False,
    live: Callable[[str], None] | None = None,
) -> Samples:
    """`n` samples of at most `length` new characters each, after `prime`.

    lines mode: each sample starts from an empty line (+ prime) and ends at <EOS>.
    stream mode: each sample continues the prime (or a newline) for exactly `length` characters.
    live: called with each new piece of the first sample as it is generated (stream mode), so a
    long text can be shown while it grows. When that is the only sample it is not kept (texts is
    empty): memory stays flat however long it runs."""
    check_options(temperature, top_k, top_p, n, length)
    if live is not None and mode != Mode.STREAM:
        raise ValueError("live output is for stream mode")
    keep = live is None or n > 1
    rng = rng if rng is not None else np.random.default_rng()
    prime_ids, _ = vocab.encode(prime)  # unknown characters become <UNK> (sample warns of them)
    if mode == Mode.LINES:
        context = np.r_[EOS, prime_ids]
    else:  # running text starts at the start of a line: a model trained on carried state is
        nl = vocab.id_of("\n")  # lost from a bare zero state ("ROMEO:" -> "\n" 0.2 % vs 99.8 %)
        if nl != UNK:
            context = np.r_[nl, prime_ids]
        else:  # no newline to start from (<EOS> is never an input in stream training)
            context = prime_ids if len(prime_ids) else np.array([EOS])
    context = context.astype(np.int32)
    state = model.zero_state(cfg, 1)
    for i in range(0, len(context) - 1, CHUNK):  # the prime, once for all rows, a chunk at a time: flat memory
        state = model.forward(params, cfg, context[i:min(i + CHUNK, len(context) - 1), None], state).state  # (T, 1)
    state = [tuple(np.repeat(s, n, axis=0) for s in layer) for layer in state]  # (n, H) each
    banned = [] if allow_unk else [UNK]
    if mode == Mode.STREAM:
        banned.append(EOS)  # stream text never ends
    step = model.Stepper(params, cfg, state, banned)
    last = np.full(n, context[-1], dtype=np.int32)
    active = np.arange(n)  # rows still generating: a line that ended drops out of the batch
    chunks: list[np.ndarray] = []  # (steps, n) blocks: memory grows with what is generated
    t = 0
    while t < length and len(active):
        block = np.full((min(LIVE_CHUNK if live else CHUNK, length - t), n), EOS, dtype=np.int32)
        for k in range(len(block)):
            last = pick(step(last), rng, temperature, top_k, top_p)
            if len(last) == n:
                block[k] = last  # every row still going: no index array (a microsecond a character)
            else:
                block[k, active] = last
            if mode == Mode.LINES and (last == EOS).any():
                going = last != EOS
                active, last = active[going], last[going]
                step.keep(going)
                if not len(active):
                    break
        if live is not None:
            live(vocab.decode(block[:, 0]))
        if keep:
            chunks.append(block)
        t += len(block)
    if not keep:  # shown already and not kept, so that memory stays flat however long it runs
        return Samples([], n)
    out = np.concatenate(chunks)  # (steps, n)
    texts = []
    for b in range(n):
        ids = out[:, b]
        if mode == Mode.LINES:
            ends = np.flatnonzero(ids == EOS)
            ids = ids[: ends[0]] if len(ends) else ids
        texts.append(prime + vocab.decode(ids))
    return Samples(texts, n)


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """values in table, for a sorted table (np.isin would also work, but sorts the table and
    imports numpy.ma: 10+ ms of every `charrnn sample`)."""
    if len(table) == 0:
        return np.zeros(len(values), dtype=bool)
    i = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[i] == values


def generate_from(ck: Checkpoint, n: int = 1, novel: bool | None = None, max_rounds: int = 20, **kw: Any) -> Samples:
    """`generate` with a checkpoint's best weights, checking samples against the lines of the
    training text (validation lines included).

    novel=True: only distinct, non-empty samples that are not lines of the text, generating
    more rounds (up to `max_rounds`; one when sampling is deterministic) as needed.
    None (the default): the same for line models, topped up with the other samples if too
    few new ones turn up; no check for stream models. False: no check."""
    mode = ck.meta.mode
    checkable = mode == Mode.LINES and len(ck.line_hashes) > 0
    if novel and not checkable:
        raise CharrnnError("--novel needs a checkpoint trained in lines mode (it compares whole lines)")
    if novel is False or not checkable:
        return generate(ck.sampling_params, ck.cfg, ck.vocab, mode, n, **kw)
    if kw.get("temperature", 1.0) == 0 or kw.get("top_k", 0) == 1:
        max_rounds = 1  # deterministic: more rounds would repeat the same samples
    table = ck.line_hashes  # saved sorted; a checkpoint built in memory may not be
    if len(table) > 1 and not (table[1:] >= table[:-1]).all():
        table = np.sort(table)
    kept: list[str] = []  # new, distinct, non-empty samples
    seen: list[str] = []  # the rest, for topping up
    distinct: set[str] = set()
    generated, novel_count = 0, 0
    for _ in range(max_rounds):
        s = generate(ck.sampling_params, ck.cfg, ck.vocab, mode, n, **kw)
        generated += len(s.texts)
        is_new = ~_in_sorted(hash_each(s.texts), table)
        novel_count += int(is_new.sum())
        for text, new in zip(s.texts, is_new, strict=True):
            good = new and text and text not in distinct  # an empty line is no name; nor is a second copy
            (kept if good else seen).append(text)
            distinct.add(text)
        if len(kept) >= n:
            break
    out = Samples(kept[:n], generated, novel_count)
    if novel is None and len(kept) < n:
        out.texts += seen[: n - len(kept)]
        out.repeats = len(out.texts) - len(kept)
    return out
