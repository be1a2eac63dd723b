"""What `charrnn show` computes: a model run over a text, one value per character of it.

Everything here is a pure function of (params, config, text) returning arrays or small
dataclasses; the terminal, JSON and HTML renderings live in `show_render` and `show_html`.

Alignment: the value of a unit at character t is the state *after reading* t (what the model
knows once it has seen t); the prediction of character t is the distribution *before* it, from
everything up to t - 1. Surprise is -log2 p(t), in bits, from the one scorer, `score.log_probs`.
- stream: the text is one stream in reading order from a zero state, run `CHUNK` steps per
  forward call with the state carried on. The first character is context only (no prediction).
- lines: every non-empty line runs from its start as in training, input [<EOS>, c_1 .. c_n,
  <EOS>]: c_k's values come from step k, the newline's from step n + 1 (after reading <EOS>);
  c_k is predicted at step k - 1. The newline of an empty line is never read (NaN).

Features for `--find` are read causally too: each says what is true once character t is read.

Bidirectional models: a level's units are its two layers side by side, [h→ ; h←] (2H: units
0..H-1 read left to right, H..2H-1 right to left); the text is read whole (lines between two
<EOS>, stream text in CHUNK pieces without carried state). Their surprise is the masked-character
surprise: each character hidden in turn (as <MASK>) and predicted from both sides, batched, within
a window of the model's --seq-len around it. For the neighbors objective hiding it changes nothing
(its prediction never reads it), so lines are read once each rather than once per character.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn import cells, model, score
from charrnn.config import Mode, ModelConfig, Objective
from charrnn.data import line_starts
from charrnn.errors import OptionError
from charrnn.fill import padded_batches
from charrnn.vocab import EOS, UNK, Vocab

__all__ = ["TextRun", "encode", "cut", "value_names", "run_text", "surprise", "top_predictions", "features",
           "correlations", "correlation_matrix", "Found", "find_units", "Saturation", "saturation", "UnitView",
           "parse_unit", "is_sigmoid", "UNK"]

CHUNK = 256  # stream: steps per forward call
LINE_BATCH_CELLS = 65536  # lines: T * B of one batch at most (bounds the traces' memory)
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "u"), "rnn": ()}  # in (0, 1): what saturation means
LEFT, RIGHT = 0.1, 0.9  # a sigmoid gate below LEFT is left-saturated (closed), above RIGHT right-saturated


@dataclass
class TextRun:
    """The model run over a text: per character, what it read and what it predicted there."""

    ids: np.ndarray  # (n,) the id each character was read as (lines: newline = <EOS>)
    read: np.ndarray  # (n,) bool: the model read the character (False: an empty line's newline)
    logits: np.ndarray | None  # (n, V) float64 logits of the prediction of each character, NaN rows where none
    values: list[dict[str, np.ndarray]]  # per layer: "h", "c" (LSTM) or a gate name -> (n, H), NaN where not read

    def value(self, layer: int, unit: int, what: str = "h") -> np.ndarray:
        """(n,) one unit's trace."""
        return self.values[layer][what][:, unit]


def encode(text: str, vocab: Vocab, mode: Mode) -> tuple[np.ndarray, int]:
    """One id per character of `text` (lines: newline = <EOS>) and how many are <UNK>."""
    return vocab.encode(text, newline_as_eos=mode == Mode.LINES)


def cut(text: str, max_chars: int, mode: Mode) -> str:
    """The first `max_chars` characters; lines: the whole lines that fit (at least the first, cut)."""
    if len(text) <= max_chars:
        return text
    if mode == Mode.LINES:
        end = text.rfind("\n", 0, max_chars)  # the newline of the last whole line that fits
        if end >= 0:
            return text[: end + 1]
    return text[:max_chars]


def width(cfg: ModelConfig) -> int:
    """Units per layer as `show` counts them: H, or 2H for a bidirectional level."""
    return cfg.hidden_size * (2 if cfg.bidirectional else 1)


def _levels(fwd: model.Forward, what: str) -> list[np.ndarray]:
    """Per level, (T, B, width) values: one layer's, or a bidirectional level's two side by side."""
    out: list[np.ndarray] = []
    for level in model.levels([run.layer for run in fwd.layers]):
        parts = [_take(fwd.layers[k], what) for k in level]
        out.append(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2))
    return out


def value_names(cell: str) -> tuple[str, ...]:
    """What can be looked at per unit: h, the LSTM's c, and each gate."""
    return ("h",) + (("c",) if cell == "lstm" else ()) + (cells.GATE_ORDER[cell] if cell != "rnn" else ())


def _take(run: model.LayerRun, what: str) -> np.ndarray:
    if what == "h":
        return run.hs
    if what == "c":
        assert run.cs is not None
        return run.cs
    return run.gate(what)


def run_text(
    params: model.Params,
    cfg: ModelConfig,
    mode: Mode,
    ids: np.ndarray,
    keep: tuple[str, ...] = ("h",),
    logits: bool = True,
) -> TextRun:
    """Run the model over `ids` (one per character, from `encode`) as the module docstring says,
    keeping the per-character values named in `keep` (see `value_names`) and, if asked, the
    logits of every prediction."""
    n, H, V = len(ids), width(cfg), cfg.vocab_size
    vals = [{w: np.full((n, H), np.nan, np.dtype(cfg.dtype)) for w in keep} for _ in range(cfg.layers)]
    lg = np.full((n, V), np.nan) if logits else None
    read = np.zeros(n, bool)
    bi = cfg.bidirectional
    if mode == Mode.STREAM:
        state = None
        for s in range(0, n, CHUNK):
            x = ids[s : s + CHUNK, None].astype(np.int32)  # (T, 1)
            fwd = model.forward(params, cfg, x, None if bi else state)
            state = fwd.state
            for w in keep:
                for l, v in enumerate(_levels(fwd, w)):
                    vals[l][w][s : s + len(x)] = v[:, 0]
            if lg is not None and not bi:  # step t predicts character t + 1
                lg[s + 1 : s + 1 + len(x)] = fwd.logits[: n - 1 - s, 0]
        read[:] = True
        if lg is not None and bi:
            lg[:] = masked_logits(params, cfg, mode, ids, CHUNK)
        return TextRun(ids, read, lg, vals)

    starts = line_starts(np.r_[ids, EOS] if n and ids[-1] != EOS else ids)  # the last line may lack its newline
    ends = np.r_[starts[1:] - 1, n if n and ids[-1] != EOS else n - 1]  # where each line's newline stands (or n)
    lengths = ends - starts  # characters before the newline
    lines = np.flatnonzero(lengths > 0)  # an empty line is not an example: never read
    order = lines[np.argsort(lengths[lines], kind="stable")]
    k = 0
    while k < len(order):
        B = max(1, min(256, LINE_BATCH_CELLS // (int(lengths[order[min(k + 255, len(order) - 1)]]) + 2)))
        which = order[k : k + B]
        L = lengths[which]  # (B,)
        T = int(L.max()) + 2
        t = np.arange(T)[:, None]  # (T, 1)
        x = np.full((T, len(which)), EOS, np.int32)  # (T, B), <EOS> first, last and as padding
        inside = (t >= 1) & (t <= L[None, :])  # (T, B) steps that read a character of the line
        src = starts[which][None, :] + t - 1  # (T, B) the text position step t reads
        x[inside] = ids[src[inside]]
        has_nl = ends[which] < n  # (B,) the line ends with a newline in the text
        got = inside | ((t == L[None, :] + 1) & has_nl[None, :])  # (T, B) steps whose values we keep
        fwd = model.forward(params, cfg, x, lengths=L + 2 if bi else None)
        for w in keep:
            for l, v in enumerate(_levels(fwd, w)):
                vals[l][w][src[got]] = v[got]
        read[src[got]] = True
        if lg is not None and not bi:  # step t predicts the character at src + 1
            pred = (t <= L[None, :] - 1) | ((t == L[None, :]) & has_nl[None, :])  # (T, B)
            lg[src[pred] + 1] = fwd.logits[pred]
        k += len(which)
    if lg is not None and bi:
        lg[:] = masked_logits(params, cfg, mode, ids, 1 << 30)
    return TextRun(ids, read, lg, vals)


def masked_logits(params: model.Params, cfg: ModelConfig, mode: Mode, ids: np.ndarray, max_len: int) -> np.ndarray:
    """(n, V) logits of a bidirectional model for every character hidden in turn, NaN rows where
    nothing is predicted (lines: the newlines). stream: a window of max_len characters around each;
    lines: the character's own line, read between two <EOS>."""
    n, V = len(ids), cfg.vocab_size
    mask_id = model.input_size(cfg) - 1
    out = np.full((n, V), np.nan)
    rows: list[tuple[np.ndarray, int, int]] = []  # (frame, where the hidden character is in it, its position)
    if mode == Mode.STREAM:
        W = min(max_len, n)
        for t in range(n):
            s = min(max(t - W // 2, 0), n - W)
            rows.append((ids[s : s + W], t - s, t))
    else:
        ends = np.flatnonzero(ids == EOS)
        starts = np.r_[0, ends + 1]
        ends = np.r_[ends, n]
        if cfg.objective == Objective.NEIGHBORS:  # t is never read for its own prediction: one pass a line
            lines = [(s, e) for s, e in zip(starts, ends, strict=True) if e > s]
            for group, x, lengths in padded_batches([np.r_[EOS, ids[s:e], EOS].astype(np.int64) for s, e in lines]):
                logits = model.forward(params, cfg, x, lengths=lengths).logits  # (T, b, V)
                for j, g in enumerate(group):
                    s, e = lines[g]
                    out[s:e] = logits[1 : 1 + e - s, j]
            return out
        for s, e in zip(starts, ends, strict=True):
            frame = np.r_[EOS, ids[s:e], EOS]
            rows += [(frame, k + 1, s + k) for k in range(e - s)]
    frames = []
    for f, at, _ in rows:
        f = f.astype(np.int64)  # a copy: the hidden character becomes <MASK>
        f[at] = mask_id
        frames.append(f)
    where, position = np.array([at for _, at, _ in rows], np.int64), np.array([p for _, _, p in rows], np.int64)
    for group, x, lengths in padded_batches(frames):
        logits = model.forward(params, cfg, x, lengths=lengths).logits  # (T, b, V)
        out[position[group]] = logits[where[group], np.arange(len(group))]
    return out


def surprise(
    params: model.Params, cfg: ModelConfig, mode: Mode, ids: np.ndarray, max_len: int
) -> np.ndarray:
    """(n,) -log2 p of every character in bits, NaN where not predicted (score.log_probs's rules:
    a stream's first character; an empty line's newline; lines: characters past `max_len`)."""
    out = np.full(len(ids), np.nan)
    if cfg.bidirectional:  # each character hidden in turn
        lg = log_softmax(masked_logits(params, cfg, mode, ids, max_len))
        got = ~np.isnan(lg[:, 0])
        out[got] = -lg[got, ids[got]] / np.log(2)
        return out
    if mode == Mode.STREAM:
        lp = score.log_probs(params, cfg, mode, ids, max_len=max_len, batch_size=1)  # one stream, state carried
        return -lp / np.log(2)
    kept = np.ones(len(ids), bool)  # encode_lines drops the <EOS> of empty lines
    nl = ids == EOS
    kept[1:] &= ~(nl[1:] & nl[:-1])
    if len(ids):
        kept[0] = not nl[0]
    lines_ids = ids[kept]
    if len(lines_ids) and lines_ids[-1] != EOS:
        lines_ids = np.r_[lines_ids, EOS].astype(ids.dtype)
    if len(lines_ids) == 0:
        return out
    lp = score.log_probs(params, cfg, mode, lines_ids, line_starts(lines_ids), max_len=max_len)
    out[kept] = -lp[: kept.sum()] / np.log(2)
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def top_predictions(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely ids of each row of logits (n, V), best first, and their probabilities:
    (n, k) int and (n, k) float; rows of NaN give id -1, probability NaN."""
    k = min(k, logits.shape[-1])
    ok = ~np.isnan(logits[:, 0])
    top = np.full((len(logits), k), -1, np.int64)
    p = np.full((len(logits), k), np.nan)
    if ok.any():
        prob = np.exp(log_softmax(logits[ok]))  # (m, V)
        best = np.argsort(-prob, axis=1, kind="stable")[:, :k]  # (m, k)
        top[ok], p[ok] = best, np.take_along_axis(prob, best, axis=1)
    return top, p


# ---------------------------------------------------------------- features and correlation


def features(text: str) -> dict[str, np.ndarray]:
    """Simple properties of the text at each character, as (n,) floats, once it is read."""
    n = len(text)
    c = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)  # (n,) code points
    nl = c == ord("\n")
    line = np.cumsum(nl) - nl  # (n,) which line each character is on (a newline ends its line)
    line_start = np.r_[0, np.flatnonzero(nl) + 1][line]  # (n,)
    pos = np.arange(n) - line_start  # (n,) column; a newline's is its line's length
    to_end = np.r_[np.flatnonzero(nl), n][line] - np.arange(n)  # (n,) characters left before the newline
    quotes = np.cumsum(c == ord('"'))  # (n,) double quotes so far
    quotes_on_line = quotes - np.r_[0, quotes][line_start]  # a quote never spans lines: unbalanced ones end there
    depth = np.zeros(n)  # brackets open so far (never below 0): code's blocks span lines
    indent = np.zeros(n)  # blanks leading the current line, read so far
    d = blanks = 0
    leading = True
    for t, ch in enumerate(text):
        d = d + 1 if ch in "([{" else max(d - 1, 0) if ch in ")]}" else d
        if ch == "\n":
            leading = True
        elif leading and ch in " \t":
            blanks += 1
        elif leading:
            leading = False
        depth[t], indent[t] = d, blanks
        if ch == "\n":
            blanks = 0
    return {
        "inside quotes": (quotes_on_line % 2).astype(float),  # after an opening ", up to its closing one
        "inside brackets": (depth > 0).astype(float),
        "position in line": pos.astype(float),
        "chars to end of line": to_end.astype(float),
        "after a newline": nl.astype(float),
        "in a word": np.fromiter((ch.isalnum() or ch == "_" for ch in text), bool, n).astype(float),
        "indentation": indent,
    }


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of values (n, U) with feature (n,), over the rows
    where both are finite: (U,); 0 where either side is constant."""
    return correlation_matrix(values, feature[:, None])[:, 0]


def correlation_matrix(values: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Pearson correlations (U, k) of every column of values (n, U) with every column of
    feats (n, k), over the rows where all are finite; 0 where either side is constant.
    r = sum (x - mean x)(f - mean f) / (|x - mean x| |f - mean f|), one product for all pairs."""
    ok = np.isfinite(feats).all(axis=1) & np.isfinite(values).all(axis=1)
    X = values[ok].astype(np.float64)  # (m, U)
    F = feats[ok].astype(np.float64)  # (m, k)
    X -= X.mean(axis=0)
    F -= F.mean(axis=0)
    sx = np.sqrt(np.einsum("mu,mu->u", X, X))  # (U,)
    sf = np.sqrt(np.einsum("mk,mk->k", F, F))  # (k,)
    tiny = 1e-12 * np.sqrt(max(len(X), 1))  # a column that varies only by rounding counts as constant
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (X.T @ F) / np.outer(sx, sf)  # (U, k)
    return np.where((sx[:, None] > tiny) & (sf[None, :] > tiny), r, 0.0)


@dataclass
class Found:
    """The unit whose h follows a feature most closely."""

    feature: str
    layer: int
    unit: int
    r: float  # Pearson correlation (its sign says which way the unit goes)


def find_units(run: TextRun, feats: dict[str, np.ndarray]) -> list[Found]:
    """For each feature, the unit of any layer with the largest |correlation| of h."""
    names = list(feats)
    F = np.stack([feats[k] for k in names], axis=1)  # (n, k)
    best = [Found(name, 0, 0, 0.0) for name in names]
    for l, layer in enumerate(run.values):
        R = correlation_matrix(layer["h"], F)  # (H, k)
        for j, u in enumerate(np.argmax(np.abs(R), axis=0)):
            if abs(R[u, j]) > abs(best[j].r):
                best[j] = Found(names[j], l, int(u), float(R[u, j]))
    return best


# ---------------------------------------------------------------- saturation


@dataclass
class Saturation:
    """How often each unit's gate is closed (left, < LEFT) or open (right, > RIGHT) over the text."""

    layer: int
    gate: str
    left: np.ndarray  # (H,) fraction of characters
    right: np.ndarray  # (H,)

    def mostly(self, side: str, share: float = 0.5) -> int:
        """Units saturated on `side` for more than `share` of the text."""
        return int(np.count_nonzero((self.left if side == "left" else self.right) > share))


def saturation(run: TextRun, cell: str) -> list[Saturation]:
    """For each layer and sigmoid gate (LSTM i, f, o; GRU r, u), left and right saturation."""
    out = []
    for l, layer in enumerate(run.values):
        for g in SIGMOID_GATES[cell]:
            a = layer[g][run.read]  # (m, H)
            out.append(Saturation(l, g, (a < LEFT).mean(axis=0), (a > RIGHT).mean(axis=0)))
    return out


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class UnitView:
    """One unit's value to colour by: layer, unit index, and h or a gate."""

    layer: int
    unit: int
    what: str = "h"

    @property
    def label(self) -> str:
        return f"layer {self.layer} unit {self.unit}" + ("" if self.what == "h" else f" gate {self.what}")


def parse_unit(spec: str, gate: str | None, cfg: ModelConfig) -> UnitView:
    """`--unit L:N` and `--gate` checked against the model; an OptionError names what is wrong."""
    parts = spec.split(":")
    try:
        layer, unit = (int(p) for p in parts)
    except ValueError:
        raise OptionError(f"--unit must be LAYER:UNIT, two whole numbers such as 0:5, not {spec!r}") from None
    if not 0 <= layer < cfg.layers:
        raise OptionError(f"--unit {spec}: no layer {layer}; the model has {cfg.layers} "
                          f"(0{'' if cfg.layers == 1 else f' to {cfg.layers - 1}'})")
    if not 0 <= unit < width(cfg):
        raise OptionError(f"--unit {spec}: no unit {unit}; layers have {width(cfg)} (0 to {width(cfg) - 1})")
    what = gate or "h"
    if gate is not None:
        names = cells.GATE_ORDER[cfg.cell] if cfg.cell != "rnn" else ()
        if gate not in names:
            has = f"it has {', '.join(names)}" if names else "it has none"
            raise OptionError(f"--gate {gate}: a {cfg.cell} cell has no gate {gate!r} ({has})")
    return UnitView(layer, unit, what)


def is_sigmoid(cell: str, what: str) -> bool:
    """Whether values of `what` lie in (0, 1) rather than (-1, 1)."""
    return what in SIGMOID_GATES[cell]

