"""How `charrnn show` draws its values: colour scales, safe characters, terminal and JSON output.

The colour scales are shared with the HTML page (`show_html`), whose script repeats them:
- surprise, in bits: plain below 1 bit, then light yellow to dark red, saturating at 8 bits;
- a unit's value: diverging blue (-1) - plain (0) - red (+1); sigmoid gates (0 .. 1) are
  stretched onto it, 0.5 being plain.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from charrnn.vocab import EOS, UNK, Vocab

SURPRISE_MAX = 8.0  # bits at which the surprise scale is at its hottest
# light yellow to dark red (ColorBrewer YlOrRd), one step per bit from 1 bit up
HOT = ((255, 255, 204), (255, 237, 160), (254, 217, 118), (254, 178, 76), (253, 141, 60), (252, 78, 42),
       (227, 26, 28), (177, 0, 38))
Rgb = tuple[int, int, int]


def surprise_rgb(bits: float) -> Rgb | None:
    """Background for a character `bits` surprising; None: plain (under 1 bit, or not predicted)."""
    if not math.isfinite(bits) or bits < 1:
        return None
    return HOT[min(int(bits) - 1, len(HOT) - 1)]


def unit_rgb(v: float, sigmoid: bool = False) -> Rgb | None:
    """Background for a unit's value: blue below 0, red above, white at 0; None where not read."""
    if not math.isfinite(v):
        return None
    x = max(-1.0, min(1.0, 2 * v - 1 if sigmoid else v))
    fade = round(255 * (1 - abs(x)))
    return (255, fade, fade) if x >= 0 else (fade, fade, 255)


def ink(rgb: Rgb) -> str:
    """Black or white text, whichever reads better on `rgb`."""
    r, g, b = rgb
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 110 else "#ffffff"


def hexcolor(rgb: Rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def safe_char(ch: str) -> str:
    """A character as it may be written to a terminal or a page: control characters become their
    Unicode pictures (ESC -> ␛), other unprintable ones (bidi overrides, C1 controls) <U+XXXX>.
    Newlines and tabs stay (the layout of the text)."""
    if ch in "\n\t":
        return ch
    o = ord(ch)
    if o < 0x20:
        return chr(0x2400 + o)
    if o == 0x7F:
        return "\u2421"
    if not ch.isprintable():
        return f"<U+{o:04X}>"
    return ch


def token_text(vocab: Vocab, i: int) -> str:
    """A predicted id as a person reads it."""
    if i == EOS:
        return "⏎"
    if i == UNK:
        return "<UNK>"
    ch = vocab.token(i)
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(ch, safe_char(ch))


def scatter(x: np.ndarray, y: np.ndarray, width: int = 33, height: int = 11) -> list[str]:
    """Rows of a text scatter plot of points in [0, 1]^2, x to the right and y up; the mark
    says how many points share a cell (· 1, • 2-4, ● 5+). Axes labelled 0 and 1."""
    counts = np.zeros((height, width), np.int64)
    cols = np.clip(np.round(np.asarray(x) * (width - 1)).astype(int), 0, width - 1)
    rows = np.clip(np.round((1 - np.asarray(y)) * (height - 1)).astype(int), 0, height - 1)
    counts += np.bincount(rows * width + cols, minlength=height * width).reshape(height, width)
    marks = np.where(counts == 0, " ", np.where(counts == 1, "·", np.where(counts < 5, "•", "●")))
    lines = []
    for r in range(height):
        label = "1" if r == 0 else "0" if r == height - 1 else " "
        lines.append(f"{label}┤{''.join(marks[r])}")
    lines.append(" └" + "─" * width)
    lines.append("  0" + " " * (width - 2) + "1")
    return lines


def rounded(v: float, digits: int = 3) -> float | None:
    """A JSON-safe number: None for NaN."""
    return round(float(v), digits) if math.isfinite(v) else None


def json_chars(text: str, unk: np.ndarray, values: dict[str, np.ndarray], top: tuple[np.ndarray, np.ndarray] | None,
               vocab: Vocab) -> list[dict[str, Any]]:
    """One record per character: its text, whether it is <UNK>, each named value, and the top predictions."""
    out = []
    for i, ch in enumerate(text):
        rec: dict[str, Any] = {"i": i, "char": ch}
        if unk[i]:
            rec["unk"] = True
        for name, a in values.items():
            rec[name] = rounded(a[i], 4)
        if top is not None:
            ids, p = top
            rec["top"] = [{"char": "\n" if t == EOS else "<UNK>" if t == UNK else vocab.token(int(t)),
                           "p": round(float(q), 4)} for t, q in zip(ids[i], p[i], strict=True) if t >= 0]
        out.append(rec)
    return out


# ---------------------------------------------------------------- terminal


def list_char(ch: str) -> str:
    """A character in a one-per-line listing: newline, space and tab made visible."""
    return {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(ch, safe_char(ch))


def coloured(text: str, colours: list[Rgb | None], unk: np.ndarray) -> Any:
    """A rich Text of `text` with each character on its background; <UNK> ones underlined.
    A newline with a colour shows as a coloured ⏎ before the line break."""
    from rich.style import Style
    from rich.text import Text

    out = Text()
    for ch, rgb, u in zip(text, colours, unk, strict=True):
        style = Style(bgcolor=hexcolor(rgb), color=ink(rgb)) if rgb is not None else Style()
        if u:
            style += Style(underline=True, color="magenta" if rgb is None else None)
        if ch == "\n" and rgb is not None:
            out.append("⏎", style)
            out.append("\n")
        else:
            out.append(safe_char(ch), style)
    return out


def surprise_legend() -> Any:
    from rich.style import Style
    from rich.text import Text

    t = Text("bits: ")
    t.append(" <1 ")
    for b in range(1, int(SURPRISE_MAX) + 1):
        rgb = surprise_rgb(b)
        assert rgb is not None
        t.append(f" {b}{'+' if b == SURPRISE_MAX else ''} ", Style(bgcolor=hexcolor(rgb), color=ink(rgb)))
    return t


def unit_legend(sigmoid: bool) -> Any:
    from rich.style import Style
    from rich.text import Text

    t = Text("value: ")
    for v in np.linspace(0, 1, 5) if sigmoid else np.linspace(-1, 1, 9):
        rgb = unit_rgb(float(v), sigmoid)
        assert rgb is not None
        t.append(f" {v:+.2g} " if not sigmoid else f" {v:.2g} ", Style(bgcolor=hexcolor(rgb), color=ink(rgb)))
    return t
