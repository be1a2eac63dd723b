"""Characters <-> integer ids.

Id 0 is <UNK>, id 1 is <EOS>, then the kept characters in code-point order. Text is
mapped through a lookup table indexed by code point, a chunk at a time, so a 100 MB
file becomes a uint8/uint16 array without ever building a Python list of characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharrnnError

UNK, EOS = 0, 1
SPECIALS = ("<UNK>", "<EOS>")
N_CODEPOINTS = 0x110000
CHUNK = 1 << 20  # characters converted per chunk: bounds the temporary uint32 array to 4 MB


def codepoints(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array (lone surrogates kept as themselves)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (n,)


def count_chars(text: str) -> np.ndarray:
    """How often each code point occurs: an int64 array of length 0x110000."""
    counts = np.zeros(N_CODEPOINTS, dtype=np.int64)
    for start in range(0, len(text), CHUNK):
        counts += np.bincount(codepoints(text[start : start + CHUNK]), minlength=N_CODEPOINTS)
    return counts


@dataclass
class Vocab:
    chars: str  # the kept characters, sorted by code point; char k has id k + 2

    @classmethod
    def build(
        cls,
        counts: np.ndarray,
        min_count: int = 1,
        max_size: int = 0,
        exclude: str = "",
    ) -> Vocab:
        """Keep characters seen at least `min_count` times, at most the `max_size` most
        frequent (0: no limit, ties broken by code point); the rest become <UNK>."""
        counts = counts.copy()
        for ch in exclude:
            counts[ord(ch)] = 0
        kept = np.flatnonzero(counts >= max(min_count, 1))  # (n_kept,) sorted code points
        if max_size and len(kept) > max_size:
            order = np.argsort(-counts[kept], kind="stable")[:max_size]
            kept = np.sort(kept[order])
        if len(kept) + len(SPECIALS) > np.iinfo(np.uint16).max:
            raise CharrnnError(f"{len(kept)} distinct characters is too many: use --min-count or --max-vocab")
        return cls("".join(map(chr, kept)))

    def __post_init__(self) -> None:
        cps = codepoints(self.chars)
        if len(cps) and (np.any(np.diff(cps.astype(np.int64)) <= 0)):
            raise CharrnnError("vocabulary characters must be distinct and sorted")
        self.dtype = np.uint8 if len(self) <= 256 else np.uint16
        self._lut = np.full(N_CODEPOINTS, UNK, dtype=self.dtype)  # code point -> id
        self._lut[cps] = np.arange(len(SPECIALS), len(self), dtype=self.dtype)
        self._itos = list(SPECIALS) + list(self.chars)
        self._codes = np.r_[np.zeros(len(SPECIALS), np.uint32), cps]  # id -> code point (specials: per call)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str, newline_as_eos: bool = False) -> tuple[np.ndarray, int]:
        """Ids of `text` (uint8 when the vocabulary fits, else uint16) and how many became <UNK>.

        With `newline_as_eos` each '\\n' becomes <EOS> (lines mode) and is not counted as unknown.
        """
        ids = np.empty(len(text), dtype=self.dtype)  # (n,)
        for start in range(0, len(text), CHUNK):
            cps = codepoints(text[start : start + CHUNK])
            ids[start : start + len(cps)] = self._lut[cps]
        if newline_as_eos:
            ids[self.newline_positions(text)] = EOS
        n_unk = int(np.count_nonzero(ids == UNK))
        return ids, n_unk

    @staticmethod
    def newline_positions(text: str) -> np.ndarray:
        pos = []
        for start in range(0, len(text), CHUNK):
            pos.append(start + np.flatnonzero(codepoints(text[start : start + CHUNK]) == 10))
        return np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64)

    def id_of(self, ch: str) -> int:
        return int(self._lut[ord(ch)])

    def decode(self, ids: np.ndarray | list[int], unk: str = "\ufffd", eos: str = "\n") -> str:
        """Text of `ids`; <UNK> shows as U+FFFD and <EOS> as a newline unless told otherwise.

        Vectorised through a code-point table, so decoding a whole corpus is fast."""
        if len(unk) != 1 or len(eos) != 1:
            return "".join((unk, eos)[i] if i < len(SPECIALS) else self._itos[i] for i in map(int, ids))
        table = self._codes.copy()
        table[[UNK, EOS]] = ord(unk), ord(eos)
        ids = np.asarray(ids)
        # a chunk at a time: a whole corpus at once took 16 bytes per character on top of the result
        return "".join(table[ids[s : s + CHUNK]].tobytes().decode("utf-32-le", "surrogatepass")
                       for s in range(0, len(ids), CHUNK))

    def token(self, i: int) -> str:
        return self._itos[i]
