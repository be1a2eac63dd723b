"""A small terminal line chart for loss curves (no plotting library needed)."""

from __future__ import annotations

import numpy as np


def line_chart(
    series: dict[str, tuple[np.ndarray, np.ndarray]], width: int = 64, height: int = 12, marks: str = "•×"
) -> list[str]:
    """Rows of text plotting each (x, y) series with its own mark; later series draw on top.

    The y axis is labelled on the left, the x range below."""
    pts = [(np.asarray(x, float), np.asarray(y, float)) for x, y in series.values() if len(x)]
    if not pts:
        return []
    xs = np.concatenate([x for x, _ in pts])
    ys = np.concatenate([y for _, y in pts])
    ok = np.isfinite(ys)
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    y0, y1 = np.percentile(ys[ok], 0), np.percentile(ys[ok], 98)  # ignore the first few very high losses
    if y1 - y0 < 1e-9:
        y1 = y0 + 1e-3
    grid = [[" "] * width for _ in range(height)]
    for mark, (x, y) in zip(marks, pts, strict=False):
        cols = np.clip(((x - x0) / (x1 - x0) * (width - 1)).round().astype(int), 0, width - 1)
        rows = np.clip(((y1 - y) / (y1 - y0) * (height - 1)).round().astype(int), 0, height - 1)
        for r, c in zip(rows, cols, strict=True):
            grid[r][c] = mark
    lines = []
    for r, row in enumerate(grid):
        label = f"{y1 - r * (y1 - y0) / (height - 1):6.3f}" if r in (0, height // 2, height - 1) else " " * 6
        lines.append(f"{label} ┤{''.join(row)}")
    lines.append(" " * 7 + "└" + "─" * width)
    left, right = f"step {x0:,.0f}", f"{x1:,.0f}"
    lines.append(" " * 8 + left + " " * max(1, width - len(left) - len(right)) + right)
    return lines
