"""`charrnn show --html`: one self-contained page to explore what a model makes of a text.

No network: no external scripts, styles or fonts. The page holds the text as one <span> per
character, coloured for the first view; a selector (or a URL hash such as `#view=unit:0:5`,
`#view=gate:0:5:f`, `#view=surprise`; `&at=N` also opens the hover box on character N)
recolours it from per-character values embedded as JSON in thousandths (integers: 0.123 is
123). Embedded: surprise, the top-5 predictions at every character, and h and every gate of at
most `PAGE_UNITS` units per layer (the ones whose h varies most over the text) plus the unit
asked for and those `--find` picks. Gate saturation plots are inline SVG. Everything taken from
the text or the checkpoint is escaped.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np

from charrnn import report, show
from charrnn import show_render as sr
from charrnn.checkpoint import Checkpoint

PAGE_UNITS = 16  # units per layer whose values the page embeds, besides the asked and the found ones
TOP = 5  # predictions listed when hovering a character


def _milli(a: np.ndarray) -> list[Any]:
    """Values in thousandths (nested lists for a 2-d array), None for NaN: compact JSON."""
    m = np.round(np.asarray(a, np.float64) * 1000)
    if m.ndim > 1:
        return [_milli(row / 1000) for row in m]
    return [None if not np.isfinite(v) else int(v) for v in m]


def _script_json(data: Any) -> str:
    """JSON that cannot end the <script> element it sits in, nor open a comment."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c").replace(
        ">", "\\u003e").replace("&", "\\u0026")


def _style(rgb: sr.Rgb | None) -> str:
    if rgb is None:
        return ""
    return f' style="background-color:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{sr.ink(rgb)}"'


def _scatter_svg(s: show.Saturation, size: int = 150) -> str:
    """One gate's saturation: a point per unit at (left fraction, right fraction)."""
    pad, inner = 26, size - 34
    dots = "".join(f'<circle cx="{pad + x * inner:.1f}" cy="{size - pad - y * inner:.1f}" r="2.2"/>'
                   for x, y in zip(s.left, s.right, strict=True))
    x0, y0, x1, y1 = pad, size - pad, pad + inner, size - pad - inner
    return (f'<svg class="sat" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 30}" '
            f'viewBox="0 0 {size} {size + 30}" role="img" aria-label="layer {s.layer} gate {s.gate}">'
            f'<text x="{size / 2}" y="12" text-anchor="middle">layer {s.layer} gate {s.gate}</text>'
            f'<g transform="translate(0,14)">'
            f'<rect x="{x0}" y="{y1}" width="{inner}" height="{inner}" class="frame"/>'
            f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y0}" class="diag"/>'
            f'<text x="{x0}" y="{y0 + 12}" text-anchor="middle">0</text>'
            f'<text x="{x1}" y="{y0 + 12}" text-anchor="middle">1</text>'
            f'<text x="{x0 - 4}" y="{y1 + 4}" text-anchor="end">1</text>'
            f'<text x="{(x0 + x1) / 2}" y="{y0 + 20}" text-anchor="middle">left (&lt; {show.LEFT})</text>'
            f'<text x="8" y="{(y0 + y1) / 2}" text-anchor="middle" transform="rotate(-90 8 {(y0 + y1) / 2})">'
            f'right (&gt; {show.RIGHT})</text>'
            f'<g class="dots">{dots}</g></g>'
            f'<text x="{size / 2}" y="{size + 27}" text-anchor="middle">mostly closed {s.mostly("left")}, '
            f'open {s.mostly("right")}</text></svg>')


def page_units(run: show.TextRun, asked: list[tuple[int, int]], per_layer: int = PAGE_UNITS) -> list[tuple[int, int]]:
    """(layer, unit) pairs to embed: those asked for, then per layer the ones whose h varies most."""
    chosen = list(dict.fromkeys(asked))
    for l, layer in enumerate(run.values):
        h = layer["h"][run.read]
        spread = h.std(axis=0) if len(h) else np.zeros(h.shape[1])
        for u in np.argsort(-spread, kind="stable")[:per_layer]:
            if (l, int(u)) not in chosen:
                chosen.append((l, int(u)))
    return chosen


def page(ck: Checkpoint, path: str, text: str, ids: np.ndarray, view: show.UnitView | None = None) -> str:
    """The whole page, as a string."""
    cfg, mode, params = ck.cfg, ck.meta.mode, ck.sampling_params
    bits = show.surprise(params, cfg, mode, ids, ck.meta.train.seq_len)
    names = tuple(w for w in show.value_names(cfg.cell) if w != "c")
    run = show.run_text(params, cfg, mode, ids, names, logits=True)
    assert run.logits is not None
    top_ids, top_p = show.top_predictions(run.logits, TOP)
    found = show.find_units(run, show.features(text))
    asked = ([(view.layer, view.unit)] if view else []) + [(f.layer, f.unit) for f in found if f.r != 0]
    units = page_units(run, asked)
    sat = show.saturation(run, cfg.cell)
    unk = ids == show.UNK

    views = [{"key": "surprise", "label": "surprise (bits)"}]
    values: dict[str, list[int | None]] = {}
    for l, u in units:
        why = [f"{f.feature} r={f.r:+.2f}" for f in found if (f.layer, f.unit) == (l, u) and f.r != 0]
        for w in names:
            key = f"unit:{l}:{u}" if w == "h" else f"gate:{l}:{u}:{w}"
            values[key] = _milli(run.value(l, u, w))
            label = f"layer {l} unit {u}" + ("" if w == "h" else f" gate {w}") + (f" ({'; '.join(why)})" if why else "")
            views.append({"key": key, "label": label})
    first = "surprise" if view is None else (f"unit:{view.layer}:{view.unit}" if view.what == "h"
                                            else f"gate:{view.layer}:{view.unit}:{view.what}")
    sigmoid = list(show.SIGMOID_GATES[cfg.cell])
    data = {
        "n": len(text), "first": first, "sigmoid": sigmoid, "views": views, "values": values,
        "bits": _milli(bits), "top": top_ids.tolist(), "p": _milli(top_p),
        "tokens": [sr.token_text(ck.vocab, i) for i in range(len(ck.vocab))],
        "surpriseMax": sr.SURPRISE_MAX, "hot": sr.HOT,
    }

    if view is None:
        colours = [sr.surprise_rgb(b) for b in bits]
    else:
        colours = [sr.unit_rgb(v, view.what in sigmoid) for v in run.value(view.layer, view.unit, view.what)]
    spans = []
    for i, (ch, rgb) in enumerate(zip(text, colours, strict=True)):
        cls = ' class="unk"' if unk[i] else ""
        if ch == "\n":
            spans.append(f'<span data-i="{i}"{cls}{_style(rgb)}>⏎</span>\n')
        else:
            spans.append(f'<span data-i="{i}"{cls}{_style(rgb)}>{html.escape(sr.safe_char(ch))}</span>')

    s = report.summary(ck, path)
    m, tr = s["config"]["model"], s["training"]
    best = tr["best_val"]["bits_per_char"]
    scored = bits[np.isfinite(bits)]
    summary_rows = [
        ("checkpoint", path),
        ("model", f"{m['cell']}{' (' + m['activation'] + ')' if m['cell'] == 'rnn' else ''}, {m['layers']} × "
                  f"{m['hidden_size']}, {m['dtype']}, {s['parameters']['total']:,} parameters"),
        ("data", f"{s['data']['mode']} mode, trained on {s['data']['source'] or '?'}, vocabulary {s['vocab']['size']}"),
        ("training", f"{tr['steps']:,} steps, {tr['wall_time_s'] / 60:.1f} min"
                     + (f", best validation {best:.3f} bits/char" if best is not None else "")),
        ("this text", f"{len(text):,} characters, {int(unk.sum()):,} not in the vocabulary (<UNK>, underlined)"
                      + (f"; mean surprise {scored.mean():.3f} bits/char" if len(scored) else "")),
    ]
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary_rows)
    found_rows = "".join(
        f'<tr><td>{html.escape(f.feature)}</td><td>{f.layer}</td><td>{f.unit}</td><td>{f.r:+.3f}</td>'
        f'<td><a href="#view=unit:{f.layer}:{f.unit}">show</a></td></tr>' if f.r != 0 else
        f"<tr><td>{html.escape(f.feature)}</td><td colspan=4>constant in this text</td></tr>" for f in found)
    if sat:
        plots = "".join(_scatter_svg(x) for x in sat)
        sat_html = (f"<p>One point per unit: the fraction of the characters its gate is left-saturated "
                    f"(&lt; {show.LEFT}, closed) against right-saturated (&gt; {show.RIGHT}, open); below each "
                    f"plot, how many units are so over half of the time.</p><div class=plots>{plots}</div>")
    else:
        sat_html = f"<p>A {html.escape(cfg.cell)} cell has no gates.</p>"
    options = "".join(f'<option value="{html.escape(v["key"])}">{html.escape(v["label"])}</option>' for v in views)
    return TEMPLATE.format(
        title=html.escape(f"charrnn show: {path}"), summary=summary, options=options, spans="".join(spans),
        found=found_rows, saturation=sat_html, data=_script_json(data), units=PAGE_UNITS)


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.2em 2em; color: #222; }}
table.summary th {{ text-align: left; color: #666; font-weight: normal; padding-right: 1em; }}
#text {{ font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 14px; line-height: 1.45;
  white-space: pre-wrap; word-break: break-all; border: 1px solid #ddd; padding: .6em; max-width: 110ch; }}
#text span.unk {{ text-decoration: underline wavy #c0c; }}
#tip {{ position: fixed; display: none; background: #fff; border: 1px solid #888; padding: .4em .6em;
  font: 13px ui-monospace, monospace; box-shadow: 2px 2px 6px rgba(0,0,0,.25); pointer-events: none; }}
#legend span {{ display: inline-block; padding: 0 .35em; font: 12px ui-monospace, monospace; }}
svg.sat text {{ font: 10px sans-serif; fill: #444; }}
svg.sat .frame {{ fill: none; stroke: #999; }} svg.sat .diag {{ stroke: #ccc; stroke-dasharray: 3 3; }}
svg.sat .dots circle {{ fill: #c0392b; fill-opacity: .45; }}
.plots {{ display: flex; flex-wrap: wrap; gap: .5em; }}
table.found td {{ padding: 0 .8em 0 0; }}
</style></head><body>
<h1>charrnn show</h1>
<table class="summary">{summary}</table>
<p><label>View: <select id="view">{options}</select></label> <span id="legend"></span></p>
<p style="color:#666;font-size:13px">Hover a character for the model's top predictions there. Units: h and every
gate of the {units} units per layer whose h varies most over this text, plus the ones found below.</p>
<div id="text">{spans}</div>
<div id="tip"></div>
<h2>Units that follow features of the text</h2>
<table class="found"><tr><th>feature</th><th>layer</th><th>unit</th><th>r</th><th></th></tr>{found}</table>
<h2>Gate saturation</h2>
{saturation}
<script type="application/json" id="data">{data}</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const spans = Array.from(document.querySelectorAll("#text span[data-i]"));
const select = document.getElementById("view");
const tip = document.getElementById("tip");
let current = null;
function surpriseRgb(b) {{
  if (b === null || b < 1) return null;
  return D.hot[Math.min(Math.floor(b) - 1, D.hot.length - 1)];
}}
function unitRgb(v, sigmoid) {{
  if (v === null) return null;
  const x = Math.max(-1, Math.min(1, sigmoid ? 2 * v - 1 : v));
  const fade = Math.round(255 * (1 - Math.abs(x)));
  return x >= 0 ? [255, fade, fade] : [fade, fade, 255];
}}
function ink(c) {{ return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 110 ? "#000000" : "#ffffff"; }}
function isSigmoid(key) {{ const p = key.split(":"); return p[0] === "gate" && D.sigmoid.includes(p[3]); }}
function valueOf(key, i) {{
  const a = key === "surprise" ? D.bits : D.values[key];
  return a[i] === null ? null : a[i] / 1000;
}}
function colourOf(key, i) {{
  const v = valueOf(key, i);
  return key === "surprise" ? surpriseRgb(v) : unitRgb(v, isSigmoid(key));
}}
function swatch(c, label) {{
  const s = document.createElement("span");
  s.textContent = label;
  if (c) {{ s.style.backgroundColor = "rgb(" + c.join(",") + ")"; s.style.color = ink(c); }}
  return s;
}}
function show(key) {{
  if (key !== "surprise" && !(key in D.values)) key = "surprise";
  current = key;
  select.value = key;
  for (const s of spans) {{
    const c = colourOf(key, +s.dataset.i);
    s.style.backgroundColor = c ? "rgb(" + c.join(",") + ")" : "";
    s.style.color = c ? ink(c) : "";
  }}
  const legend = document.getElementById("legend");
  legend.textContent = "";
  if (key === "surprise") {{
    legend.append(swatch(null, "bits: <1"));
    for (let b = 1; b <= D.surpriseMax; b++) {{
      legend.append(swatch(surpriseRgb(b), b + (b === D.surpriseMax ? "+" : "")));
    }}
  }} else {{
    const sig = isSigmoid(key);
    for (const v of sig ? [0, .25, .5, .75, 1] : [-1, -.5, 0, .5, 1]) legend.append(swatch(unitRgb(v, sig), String(v)));
  }}
}}
function fromHash() {{
  const m = /view=([^&]+)/.exec(location.hash);
  show(m ? decodeURIComponent(m[1]) : D.first);
  const at = /at=(\\d+)/.exec(location.hash);  // pin the hover box on a character (screenshots, tests)
  if (at && +at[1] < spans.length) {{
    const r = spans[+at[1]].getBoundingClientRect();
    tipAt(+at[1], r.right, r.top);
  }}
}}
select.addEventListener("change", () => {{ location.hash = "view=" + select.value; }});
window.addEventListener("hashchange", fromHash);
function tipAt(i, x, y) {{
  const s = spans[i];
  const lines = ["#" + i + "  " + s.textContent + (s.classList.contains("unk") ? "  <UNK>" : "")];
  const b = valueOf("surprise", i);
  lines.push(b === null ? "not predicted" : b.toFixed(2) + " bits");
  if (current !== "surprise") {{
    const v = valueOf(current, i);
    lines.push(select.options[select.selectedIndex].text.split(" (")[0] + ": " + (v === null ? "-" : v.toFixed(3)));
  }}
  if (D.top[i][0] >= 0) {{
    lines.push("expected:");
    D.top[i].forEach((t, k) => lines.push("  " + D.tokens[t].padEnd(6) + (D.p[i][k] / 10).toFixed(1) + "%"));
  }}
  tip.textContent = lines.join("\\n");
  tip.style.whiteSpace = "pre";
  tip.style.display = "block";
  tip.style.left = Math.min(x + 14, innerWidth - 260) + "px";
  tip.style.top = Math.min(y + 14, innerHeight - 180) + "px";
}}
document.getElementById("text").addEventListener("mouseover", (e) => {{
  const s = e.target.closest("span[data-i]");
  if (s) tipAt(+s.dataset.i, e.clientX, e.clientY); else tip.style.display = "none";
}});
document.getElementById("text").addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
fromHash();
</script>
</body></html>
"""
