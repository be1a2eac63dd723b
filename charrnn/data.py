"""Reading text, choosing a data mode, splitting, and making batches.

Two modes:
- lines: every non-empty line is one example. Input [<EOS>, c_1 .. c_n], target
  [c_1 .. c_n, <EOS>]: the model starts from an empty context and learns to end the line.
  Batches are B random lines padded to the longest, with a mask over the padding.
- stream: continuous text cut into B parallel streams; each batch is the next T characters
  of every stream (truncated BPTT), the hidden state carried from batch to batch and reset
  when the streams wrap around at the end of an epoch.

The `auto` rule (looks at the first 1 MB): `lines` when the text has at least 2 lines, no
blank lines, and 95 % of its lines are at most 50 characters long (names, word lists);
`stream` otherwise (prose with paragraphs, plays, code).
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn import limits
from charrnn.config import Mode
from charrnn.errors import CharrnnError
from charrnn.vocab import EOS, Vocab, count_chars

MODES = ("auto", *(m.value for m in Mode))
AUTO_SAMPLE = 1_000_000  # characters the auto rule looks at
AUTO_MAX_LINE = 50  # the 95th-percentile line length up to which a text counts as a list
TEXT_BYTES_PER_BYTE = 12  # memory per byte of text file: bytes, str (up to 4 a character), ids, batches
SURROGATE = re.compile("[\ud800-\udfff]")  # halves of UTF-16 pairs: no encoding can write them out


def check_decoding(encoding: str, errors: str) -> None:
    """Refuse an unknown --encoding or --errors before any file is read."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise CharrnnError(f"unknown encoding {encoding!r}") from None
    if not getattr(codec, "_is_text_encoding", True):  # rot13, base64, zlib: bytes or str to the same
        raise CharrnnError(f"{encoding!r} is not a text encoding")
    try:
        codec.decode(b"")
    except (UnicodeError, ValueError):  # "undefined" refuses everything
        raise CharrnnError(f"the {encoding!r} codec decodes no text") from None
    if errors not in ("strict", "replace", "ignore"):  # surrogateescape & co. make text that cannot be printed
        raise CharrnnError(f"--errors must be strict, replace or ignore, not {errors!r}")


def utf16_guess(head: bytes) -> str:
    """'utf-16' (with a byte-order mark), 'utf-16-le' or 'utf-16-be' when the bytes look like UTF-16 text,
    else '': a mark, or NULs at nearly every other byte (ASCII-range text in two bytes a character)."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    pairs = len(head) // 2
    if pairs < 2:
        return ""
    for name, nul_at in (("utf-16-le", 1), ("utf-16-be", 0)):
        if head[nul_at::2].count(0) >= 0.9 * pairs and head[1 - nul_at::2].count(0) <= 0.1 * pairs:
            return name
    return ""


def read_text(path: str | os.PathLike, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The file's text with universal newlines (CRLF and CR become LF), or a clear error."""
    check_decoding(encoding, errors)
    p = Path(path)
    size = limits.regular_file(p, "text file")  # /dev/zero or a FIFO would never end
    limits.require(TEXT_BYTES_PER_BYTE * size, f"reading {p} ({size:,} bytes)")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise CharrnnError(f"{p}: cannot read: {e.strerror}") from None
    if not raw:
        raise CharrnnError(f"{p}: the file is empty")
    if b"\x00" in raw[:65536] and encoding.lower().replace("-", "") in ("utf8", "ascii", "latin1"):
        wide = utf16_guess(raw[:65536])
        raise CharrnnError(f"{p}: looks like UTF-16 text: pass --encoding {wide}" if wide else
                           f"{p}: looks like a binary file (it contains NUL bytes), not text")
    try:
        text = raw.decode(encoding, errors)
    except UnicodeDecodeError as e:
        raise CharrnnError(
            f"{p}: not valid {encoding} (byte {e.start}): pass --encoding (e.g. latin-1) "
            "or --errors replace"
        ) from None
    except UnicodeError as e:  # punycode, idna: a codec's own complaint, without a position
        raise CharrnnError(f"{p}: not valid {encoding} ({e})") from None
    except LookupError:
        raise CharrnnError(f"unknown encoding {encoding!r}") from None
    del raw
    if SURROGATE.search(text):
        raise CharrnnError(f"{p}: decodes to unpaired surrogates, which are not text: check --encoding")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise CharrnnError(f"{p}: the file has only whitespace")
    return text


def choose_mode(text: str) -> Mode:
    """The `auto` rule from the module docstring."""
    head = text[:AUTO_SAMPLE]
    lines = head.rstrip("\n").split("\n")
    if len(head) == AUTO_SAMPLE and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    if len(lines) < 2 or any(not line.strip() for line in lines):
        return Mode.STREAM
    lengths = np.fromiter((len(line) for line in lines), dtype=np.int64, count=len(lines))
    return Mode.LINES if np.percentile(lengths, 95) <= AUTO_MAX_LINE else Mode.STREAM


@dataclass
class Corpus:
    """A text encoded for one mode, split into training and validation ids."""

    mode: Mode
    vocab: Vocab
    train: np.ndarray  # stream: (n,) ids; lines: (n,) ids with <EOS> ending each line
    val: np.ndarray
    train_starts: np.ndarray  # lines: start offset of each line in `train` (empty in stream)
    val_starts: np.ndarray
    unk_chars: int  # characters of the text that became <UNK>
    chars: int  # characters in the text


def line_starts(ids: np.ndarray) -> np.ndarray:
    """Start offsets of the <EOS>-terminated lines in `ids`."""
    ends = np.flatnonzero(ids == EOS)
    return np.r_[0, ends[:-1] + 1].astype(np.int64) if len(ends) else np.zeros(0, np.int64)


def encode_lines(text: str, vocab: Vocab) -> tuple[np.ndarray, int]:
    """Non-empty lines, each followed by <EOS>, and the count of <UNK> characters."""
    ids, n_unk = vocab.encode(text if text.endswith("\n") else text + "\n", newline_as_eos=True)
    keep = np.ones(len(ids), dtype=bool)  # drop the <EOS> of empty lines
    eos = ids == EOS
    keep[1:] &= ~(eos[1:] & eos[:-1])
    keep[0] = not eos[0]
    ids = ids[keep]
    return ids, n_unk


def make_corpus(
    text: str,
    mode: str | Mode = "auto",
    val_fraction: float = 0.1,
    min_count: int = 1,
    max_vocab: int = 0,
    seed: int = 0,
    vocab: Vocab | None = None,
) -> Corpus:
    """Encode `text` and split it deterministically: a seeded random subset of lines in
    lines mode, the last `val_fraction` of the text in stream mode."""
    if mode == "auto":
        mode = choose_mode(text)
    if mode not in MODES[1:]:
        raise CharrnnError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    mode = Mode(mode)
    if not 0 <= val_fraction < 1:
        raise CharrnnError(f"--val-fraction must be in [0, 1), not {val_fraction}")
    if vocab is None:
        vocab = Vocab.build(count_chars(text), min_count, max_vocab, exclude="\n" if mode == Mode.LINES else "")
        if not vocab.chars:
            raise CharrnnError(f"no character occurs {min_count} times or more: lower --min-count")
    if mode == Mode.LINES:
        ids, n_unk = encode_lines(text, vocab)
        starts = line_starts(ids)
        if len(starts) == 0:
            raise CharrnnError("the text has no non-empty lines")
        lengths = np.diff(np.r_[starts, len(ids)])
        n_val = int(round(val_fraction * len(starts))) if len(starts) > 1 else 0
        if val_fraction > 0 and len(starts) > 1:
            n_val = min(max(n_val, 1), len(starts) - 1)
        order = np.random.default_rng([seed, 1]).permutation(len(starts))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        train, train_starts = _gather_lines(ids, starts, lengths, train_idx)
        val, val_starts = _gather_lines(ids, starts, lengths, val_idx)
        return Corpus(mode, vocab, train, val, train_starts, val_starts, n_unk, len(text))
    ids, n_unk = vocab.encode(text)
    n_val = int(len(ids) * val_fraction)
    if val_fraction > 0 and len(ids) - n_val < 2:
        n_val = max(0, len(ids) - 2)
    empty = np.zeros(0, np.int64)
    train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
    return Corpus(mode, vocab, train, val, empty, empty, n_unk, len(text))


def _gather_lines(
    ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The lines numbered idx (sorted), concatenated, and their new start offsets."""
    if len(idx) == len(starts):
        return ids, starts
    chosen = np.zeros(len(starts), dtype=bool)
    chosen[idx] = True
    out = ids[np.repeat(chosen, lengths)]  # a boolean mask over ids, no list of pieces
    return out, line_starts(out)


# ---------------------------------------------------------------- batches


def lines_batch(
    ids: np.ndarray, starts: np.ndarray, which: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y (T, B) int32 and mask (T, B) for the lines numbered `which`.

    A line longer than max_len characters is cut to its first max_len (no <EOS> target)."""
    ends = np.r_[starts[1:], len(ids)]
    lengths = np.minimum(ends[which] - starts[which], max_len + 1)  # with <EOS>
    T, B = int(lengths.max()), len(which)
    y = np.zeros((T, B), dtype=np.int32)
    mask = np.zeros((T, B), dtype=np.float32)
    for b, (s, n) in enumerate(zip(starts[which], lengths, strict=True)):
        y[:n, b] = ids[s : s + n]
        mask[:n, b] = 1
    x = np.empty_like(y)
    x[0] = EOS
    x[1:] = y[:-1]
    return x, y, mask


@dataclass
class StreamLayout:
    """Where B parallel streams of T-step chunks fall in an id array of length n."""

    n: int
    batch_size: int
    seq_len: int

    @property
    def stream_len(self) -> int:  # characters of input per stream
        return (self.n - 1) // self.batch_size

    @property
    def chunks(self) -> int:  # chunks per epoch
        return self.stream_len // self.seq_len

    def batch(self, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """x, y (T, B) int32 of chunk k."""
        T, L = self.seq_len, self.stream_len
        pos = np.arange(self.batch_size)[None, :] * L + k * T + np.arange(T)[:, None]  # (T, B)
        return ids[pos].astype(np.int32), ids[pos + 1].astype(np.int32)


def fit_stream(n: int, batch_size: int, seq_len: int) -> tuple[int, int, list[str]]:
    """Shrink batch size, then sequence length, so that one epoch has at least one chunk."""
    notes = []
    if n < 2:
        raise CharrnnError("the training text needs at least 2 characters")
    if (n - 1) // batch_size < seq_len:
        b = max(1, min(batch_size, (n - 1) // seq_len))
        if b != batch_size:
            notes.append(f"batch size {batch_size} -> {b}: the text is short")
            batch_size = b
    if (n - 1) // batch_size < seq_len:
        t = (n - 1) // batch_size
        notes.append(f"sequence length {seq_len} -> {t}: the text is shorter than one sequence")
        seq_len = t
    return batch_size, seq_len, notes


def batch_shape(corpus: Corpus, batch_size: int, seq_len: int) -> tuple[int, int]:
    """(B, T) of a training batch on `corpus`: what Batches makes of the options, at most."""
    if corpus.mode == Mode.STREAM:
        return fit_stream(len(corpus.train), batch_size, seq_len)[:2]
    lengths = np.diff(np.r_[corpus.train_starts, len(corpus.train)])  # each line with its <EOS>
    return min(batch_size, len(corpus.train_starts)), min(seq_len, int(lengths.max(initial=1)))


@dataclass
class Batch:
    x: np.ndarray  # (T, B) int32 inputs
    y: np.ndarray  # (T, B) int32 targets
    mask: np.ndarray | None  # (T, B) float32, 1 where y counts (lines); None: every position (stream)
    fresh: bool = False  # stream: the streams start again from the top, so no state carries into it

    @property
    def chars(self) -> int:
        """Characters it trains on."""
        return int(self.mask.sum()) if self.mask is not None else self.x.size


class Batches:
    """A corpus's training batches in a fixed order: batch `pos` of epoch `epoch` is always the same.

    stream: B parallel streams in consecutive T-step chunks (StreamLayout), the same every epoch.
    lines: B lines at a time, in a seeded random order that changes every epoch, each cut to
    `seq_len` characters. Batch size and sequence length shrink to fit a short text (`notes`)."""

    def __init__(self, corpus: Corpus, batch_size: int, seq_len: int, seed: int) -> None:
        self.corpus, self.seed = corpus, seed
        self.notes: list[str] = []  # adjustments worth telling the user
        if corpus.mode == Mode.STREAM:
            batch_size, seq_len, self.notes = fit_stream(len(corpus.train), batch_size, seq_len)
            self.layout = StreamLayout(len(corpus.train), batch_size, seq_len)
            self.per_epoch = self.layout.chunks
        else:
            n_lines = len(corpus.train_starts)
            batch_size = min(batch_size, n_lines)
            self.per_epoch = -(-n_lines // batch_size)
            lengths = np.diff(np.r_[corpus.train_starts, len(corpus.train)]) - 1
            cut = int(np.count_nonzero(lengths > seq_len))
            if cut:
                self.notes.append(f"{cut} lines longer than --seq-len {seq_len} are cut")
        self.batch_size, self.seq_len = batch_size, seq_len
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, line order) of the last lines batch

    def order(self, epoch: int) -> np.ndarray:
        """lines: the order of the training lines in `epoch`."""
        if self._order is None or self._order[0] != epoch:
            n = len(self.corpus.train_starts)
            self._order = (epoch, np.random.default_rng([self.seed, 2, epoch]).permutation(n))
        return self._order[1]

    def get(self, epoch: int, pos: int) -> Batch:
        c, B = self.corpus, self.batch_size
        if c.mode == Mode.STREAM:
            x, y = self.layout.batch(c.train, pos)
            return Batch(x, y, None, fresh=pos == 0)
        which = self.order(epoch)[pos * B : (pos + 1) * B]
        return Batch(*lines_batch(c.train, c.train_starts, which, self.seq_len))


# ---------------------------------------------------------------- masked characters (bidirectional)

MAX_SPAN = 3  # masked spans are 1 to MAX_SPAN characters long, so multi-character gaps are learned


@dataclass
class MaskedBatch:
    """A batch for the masked-character objective: inputs with <MASK> where characters are hidden,
    the true characters, and which positions count."""

    x: np.ndarray  # (T, B) int32 inputs, mask_id at the hidden positions
    y: np.ndarray  # (T, B) int32 the true characters
    weights: np.ndarray  # (T, B) float32, 1 at target positions (the loss is the mean over them)
    lengths: np.ndarray | None  # (B,) real steps per row (lines), or None: every row is T long


def sequences(batch: Batch, mode: Mode) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """What a bidirectional model reads: (T, B) ids, lengths, and where characters may be hidden.

    lines: [<EOS>, c_1 .. c_n, <EOS>], so both ends of the line are known; only c_i are hidden.
    stream: the chunk's characters, any of which may be hidden."""
    if mode == Mode.LINES:
        assert batch.mask is not None
        seq = np.concatenate([batch.x[:1], batch.y])  # (T + 1, B)
        lengths = batch.mask.sum(axis=0).astype(np.int64) + 1
        t = np.arange(len(seq))[:, None]
        return seq, lengths, (t >= 1) & (t <= lengths[None, :] - 2)
    return batch.y, None, np.ones(batch.y.shape, dtype=bool)


def hide(candidates: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """(T, B) bool: spans of 1..MAX_SPAN positions among `candidates`, about `rate` of them in
    all, at least one per row that has a candidate."""
    T, B = candidates.shape
    starts = (rng.random((T, B)) < rate * 2 / (1 + MAX_SPAN)) & candidates  # mean span (1 + MAX_SPAN) / 2
    span = rng.integers(1, MAX_SPAN + 1, size=(T, B))
    hidden = starts.copy()
    for k in range(1, MAX_SPAN):
        hidden[k:] |= (starts & (span > k))[:-k]
    hidden &= candidates
    empty = ~hidden.any(axis=0) & candidates.any(axis=0)  # rows with nothing hidden: hide one position
    for b in np.flatnonzero(empty):
        hidden[rng.choice(np.flatnonzero(candidates[:, b])), b] = True
    return hidden


def masked_batch(batch: Batch, mode: Mode, rate: float, rng: np.random.Generator, mask_id: int,
                 every: bool = False) -> MaskedBatch:
    """Hide about `rate` of the characters; the targets are the hidden ones, or with `every` (the
    neighbors objective, which never sees the character it predicts) every character that could be."""
    seq, lengths, candidates = sequences(batch, mode)
    hidden = hide(candidates, rate, rng)
    x = np.where(hidden, mask_id, seq).astype(np.int32)
    return MaskedBatch(x, seq.astype(np.int32), (candidates if every else hidden).astype(np.float32), lengths)
