"""`charrnn show`: per-character surprise, unit traces, features, correlations and saturation
checked against the model run plainly (and numpy.corrcoef); the terminal, JSON and HTML output
as users get it; and a browser test of the page (pytest -m browser; skipped without chromium)."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import run
from rich.console import Console

from charrnn import cells, checkpoint, commands, model, show, show_html
from charrnn import show_render as sr
from charrnn.checkpoint import Checkpoint, Meta
from charrnn.config import Mode, ModelConfig, TrainConfig
from charrnn.vocab import EOS, Vocab

STREAM_TEXT = ('ROMEO: "But soft!" (aside) what light\n  through [yonder] window breaks?\n'
               'It is the east, and Juliet is the sun.\n') * 6  # 600+ characters: several CHUNKs
LINES_TEXT = "anna\nbob\n\nchristopher\nDi\n\nel"  # empty lines, no final newline
CHARS = "".join(sorted(set(STREAM_TEXT)))


def make_ck(cell: str = "lstm", layers: int = 2, hidden: int = 8, mode: Mode = Mode.STREAM,
            dtype: str = "float64", seed: int = 0) -> Checkpoint:
    vocab = Vocab(CHARS.replace("\n", "") if mode == Mode.LINES else CHARS)
    cfg = ModelConfig(len(vocab), cell, hidden, layers, dtype=dtype)
    params = model.init_params(cfg, np.random.default_rng(seed))
    return Checkpoint(cfg, vocab, params, meta=Meta(mode=mode, train=TrainConfig(seq_len=16)))


def save(tmp_path: Path, ck: Checkpoint, name: str = "m.npz") -> Path:
    path = tmp_path / name
    checkpoint.save(path, ck)
    return path


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def plain_lines(text: str) -> list[tuple[int, str]]:
    """(start, line) of every non-empty line of text."""
    out, pos = [], 0
    for line in text.split("\n"):
        if line:
            out.append((pos, line))
        pos += len(line) + 1
    return out


KINDS = [("lstm", 2, Mode.STREAM), ("gru", 1, Mode.STREAM), ("rnn", 2, Mode.STREAM),
         ("lstm", 1, Mode.LINES), ("gru", 2, Mode.LINES), ("rnn", 1, Mode.LINES)]


# ---------------------------------------------------------------- the computation


@pytest.mark.parametrize("cell,layers,mode", KINDS)
def test_surprise_is_minus_log2_of_the_softmax_of_a_plain_forward(cell, layers, mode):
    ck = make_ck(cell, layers, mode=mode)
    text = STREAM_TEXT if mode == Mode.STREAM else LINES_TEXT
    ids, _ = show.encode(text, ck.vocab, mode)
    bits = show.surprise(ck.params, ck.cfg, mode, ids, max_len=16)
    want = np.full(len(text), np.nan)
    if mode == Mode.STREAM:  # one stream from a zero state; char t predicted from step t - 1
        logits = model.forward(ck.params, ck.cfg, ids[:, None].astype(np.int32)).logits[:, 0]
        want[1:] = -log_softmax(logits)[np.arange(len(ids) - 1), ids[1:]] / np.log(2)
    else:  # each line from <EOS>; its newline (if any) is the <EOS> target
        for start, line in plain_lines(text):
            x = np.r_[EOS, ids[start : start + len(line)]].astype(np.int32)
            has_nl = start + len(line) < len(text)
            y = np.r_[ids[start : start + len(line)], EOS][: len(line) + has_nl]
            lp = log_softmax(model.forward(ck.params, ck.cfg, x[:, None]).logits[:, 0])
            want[start : start + len(y)] = -lp[np.arange(len(y)), y] / np.log(2)
    np.testing.assert_allclose(bits, want, rtol=1e-9, atol=1e-12)
    if mode == Mode.LINES:
        assert np.isnan(bits[9]) and np.isnan(bits[25])  # the newlines of the two empty lines
        assert np.isfinite(bits[:9]).all() and np.isfinite(bits[-2:]).all()


@pytest.mark.parametrize("cell,layers,mode", KINDS)
def test_unit_traces_and_predictions_match_a_plain_forward(cell, layers, mode):
    ck = make_ck(cell, layers, mode=mode)
    text = STREAM_TEXT if mode == Mode.STREAM else LINES_TEXT
    ids, _ = show.encode(text, ck.vocab, mode)
    names = show.value_names(cell)
    r = show.run_text(ck.params, ck.cfg, mode, ids, names, logits=True)
    assert r.logits is not None
    if mode == Mode.STREAM:
        assert len(text) > 2 * show.CHUNK  # the state must carry across forward calls
        fwd = model.forward(ck.params, ck.cfg, ids[:, None].astype(np.int32))
        for l, lr in enumerate(fwd.layers):
            np.testing.assert_allclose(r.values[l]["h"], lr.hs[:, 0], rtol=1e-9, atol=1e-12)
            for g in names[1:]:
                want = lr.cs[:, 0] if g == "c" else lr.gate(g)[:, 0]
                np.testing.assert_allclose(r.values[l][g], want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r.logits[1:], fwd.logits[:-1, 0], rtol=1e-9, atol=1e-12)
        assert np.isnan(r.logits[0]).all()
        return
    for start, line in plain_lines(text):
        n = len(line)
        x = np.r_[EOS, ids[start : start + n], EOS].astype(np.int32)[:, None]
        fwd = model.forward(ck.params, ck.cfg, x)
        end = start + n + (start + n < len(text))  # the newline too, when there is one
        for l, lr in enumerate(fwd.layers):
            np.testing.assert_allclose(r.values[l]["h"][start:end], lr.hs[1 : 1 + end - start, 0], rtol=1e-9)
            if cell != "rnn":
                g = cells.GATE_ORDER[cell][-1]
                np.testing.assert_allclose(r.values[l][g][start:end], lr.gate(g)[1 : 1 + end - start, 0], rtol=1e-9)
        np.testing.assert_allclose(r.logits[start:end], fwd.logits[: end - start, 0], rtol=1e-9)
    assert np.isnan(r.values[0]["h"][[9, 25]]).all() and not r.read[[9, 25]].any()


def test_top_predictions_are_the_most_likely_in_order():
    logits = np.array([[0.0, 2.0, 1.0, -1.0], [np.nan] * 4])
    top, p = show.top_predictions(logits, 2)
    soft = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert top[0].tolist() == [1, 2] and np.allclose(p[0], soft[[1, 2]])
    assert top[1].tolist() == [-1, -1] and np.isnan(p[1]).all()


def test_correlations_match_numpy_corrcoef():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 6))
    f = X[:, 2] * 0.5 + rng.standard_normal(200)
    X[:, 4] = 3.0  # constant: no correlation, not NaN
    X[10] = np.nan  # a character the model did not read
    r = show.correlations(X, f)
    ok = np.arange(200) != 10
    for u in (0, 1, 2, 3, 5):
        assert r[u] == pytest.approx(np.corrcoef(X[ok, u], f[ok])[0, 1], rel=1e-12)
    assert r[4] == 0 and abs(r[2]) > 0.3


def test_features_of_a_small_text():
    f = show.features('a "bc" (x\n  y[1]\n\nz)')
    as_int = {k: v.astype(int).tolist() for k, v in f.items()}
    assert as_int["inside quotes"] == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert as_int["inside brackets"] == [0] * 7 + [1] * 12 + [0]  # a bracket open across lines
    assert as_int["position in line"] == [*range(10), *range(7), 0, 0, 1]
    assert as_int["chars to end of line"] == [*range(9, -1, -1), *range(6, -1, -1), 0, 2, 1]
    assert as_int["after a newline"] == [0] * 9 + [1] + [0] * 6 + [1, 1, 0, 0]
    assert as_int["in a word"] == [1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0]
    assert as_int["indentation"] == [0] * 10 + [1, 2, 2, 2, 2, 2, 2, 0, 0, 0]


def test_find_recovers_hand_built_feature_units():
    """Layer 1 unit 3's h is +-1 on newlines; layer 0 unit 5's is +1 on word characters:
    find must name them, with r = 1."""
    ck = make_ck("rnn", 2, hidden=8, seed=3)
    p, V = ck.params, ck.cfg.vocab_size
    for name in ("W_x0", "W_h0", "W_x1", "W_h1"):
        p[name] *= 0.05  # everything else weak
    word = np.array([i >= 2 and (ck.vocab.token(i).isalnum()) for i in range(V)])
    p["W_x0"][:, 5] = np.where(word, 20.0, -20.0)
    p["W_h0"][:, 5] = 0
    newline = np.arange(V) == ck.vocab.id_of("\n")
    p["W_x0"][:, 6] = np.where(newline, 20.0, -20.0)  # layer 0 unit 6 sees the newline...
    p["W_h0"][:, 6] = 0
    p["W_x1"][:, 3] = 0
    p["W_x1"][6, 3] = 20.0  # ...and layer 1 unit 3 copies it
    p["W_h1"][:, 3] = 0
    ids, _ = show.encode(STREAM_TEXT, ck.vocab, Mode.STREAM)
    found = {f.feature: f for f in show.find_units(show.run_text(p, ck.cfg, Mode.STREAM, ids), show.features(
        STREAM_TEXT))}
    assert (found["in a word"].layer, found["in a word"].unit) in ((0, 5),)
    assert found["in a word"].r == pytest.approx(1.0, abs=1e-9)
    assert (found["after a newline"].layer, found["after a newline"].unit) in ((0, 6), (1, 3))
    assert found["after a newline"].r == pytest.approx(1.0, abs=1e-6)


def test_saturation_counts_closed_and_open_gates():
    ck = make_ck("lstm", 1, hidden=4)
    b = cells.split_gates(ck.params["b0"], "lstm")
    b[0][0] = -40  # unit 0's input gate never opens
    b[1][1] = 40  # unit 1's forget gate is always open
    ids, _ = show.encode(STREAM_TEXT, ck.vocab, Mode.STREAM)
    r = show.run_text(ck.params, ck.cfg, Mode.STREAM, ids, ("i", "f", "o"))
    sat = {s.gate: s for s in show.saturation(r, "lstm")}
    assert set(sat) == {"i", "f", "o"}
    assert sat["i"].left[0] == 1.0 and sat["i"].right[0] == 0.0 and sat["i"].mostly("left") >= 1
    assert sat["f"].right[1] == 1.0 and sat["f"].mostly("right") >= 1
    fwd = model.forward(ck.params, ck.cfg, ids[:, None].astype(np.int32))
    np.testing.assert_allclose(sat["o"].left, (fwd.layers[0].gate("o")[:, 0] < 0.1).mean(0))
    np.testing.assert_allclose(sat["o"].right, (fwd.layers[0].gate("o")[:, 0] > 0.9).mean(0))


def test_cut_keeps_whole_lines_in_lines_mode():
    assert show.cut("abc\ndefg\nhi\n", 9, Mode.LINES) == "abc\ndefg\n"
    assert show.cut("abcdefgh\nx\n", 4, Mode.LINES) == "abcd"  # the first line alone is too long: cut
    assert show.cut("abc\ndefg\nhi\n", 9, Mode.STREAM) == "abc\ndefg\n"[:9]


def test_colour_scales():
    assert sr.surprise_rgb(0.5) is None and sr.surprise_rgb(float("nan")) is None
    assert sr.surprise_rgb(1.0) == sr.HOT[0] and sr.surprise_rgb(30.0) == sr.HOT[-1]
    assert sr.unit_rgb(0.0) == (255, 255, 255) and sr.unit_rgb(1.0) == (255, 0, 0) and sr.unit_rgb(-2) == (0, 0, 255)
    assert sr.unit_rgb(0.5, sigmoid=True) == (255, 255, 255) and sr.unit_rgb(0.0, sigmoid=True) == (0, 0, 255)


# ---------------------------------------------------------------- the command


def test_json_lists_each_characters_bits_and_top_predictions(tmp_path, capsys):
    ck = make_ck("gru", 2)
    path = save(tmp_path, ck)
    text = "It is the east~"  # '~' is not in the vocabulary
    code, out, err = run(capsys, "show", path, "--text", text, "--json", "--top", "3")
    assert code == 0, err
    assert "Warning: 1 character(s) are not in the model's vocabulary" in err
    d = json.loads(out)
    ids, _ = show.encode(text, ck.vocab, Mode.STREAM)
    bits = show.surprise(ck.params, ck.cfg, Mode.STREAM, ids, 16)
    assert "".join(c["char"] for c in d["text"]) == text
    assert d["text"][0]["bits"] is None and d["text"][0]["top"] == []
    for c, b in zip(d["text"][1:], bits[1:], strict=True):
        assert c["bits"] == pytest.approx(b, abs=1e-4)
        assert len(c["top"]) == 3 and c["top"][0]["p"] >= c["top"][1]["p"] >= c["top"][2]["p"]
        # the character that came is as likely as its surprise says
        p_char = next((t["p"] for t in c["top"] if t["char"] == c["char"]), None)
        if p_char is not None:
            assert -np.log2(p_char) == pytest.approx(c["bits"], abs=2e-3)
    assert d["text"][-1].get("unk") is True and d["unk_chars"] == 1
    assert d["mean_bits"] == pytest.approx(np.nanmean(bits), abs=1e-4)


def test_json_unit_and_gate_values(tmp_path, capsys):
    ck = make_ck("lstm", 2)
    path = save(tmp_path, ck)
    code, out, err = run(capsys, "show", path, "--text", STREAM_TEXT[:80], "--unit", "1:3", "--gate", "f", "--json")
    assert code == 0, err
    d = json.loads(out)
    ids, _ = show.encode(STREAM_TEXT[:80], ck.vocab, Mode.STREAM)
    want = model.forward(ck.params, ck.cfg, ids[:, None].astype(np.int32)).layers[1].gate("f")[:, 0, 3]
    np.testing.assert_allclose([c["value"] for c in d["text"]], want, atol=1e-4)
    assert d["unit"] == {"layer": 1, "unit": 3, "value": "f"}


def test_plain_output_has_numbers_and_no_escape_codes(tmp_path, capsys, monkeypatch):
    path = save(tmp_path, make_ck("rnn", 1))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(commands, "out", Console(force_terminal=True, highlight=False, soft_wrap=True))
    code, out, err = run(capsys, "show", path, "--text", "It is\x1b[2J the east")
    assert code == 0, err
    assert "\x1b" not in out
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    assert [r[1] for r in rows][:7] == ["I", "t", "␣", "i", "s", "␛ <UNK>", "["]
    assert rows[0][2] == "-" and all(float(r[2]) > 0 for r in rows[1:])


def test_colour_output_escapes_terminal_controls_from_the_text(tmp_path, capsys, monkeypatch):
    path = save(tmp_path, make_ck("gru", 1))
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(commands, "out", Console(force_terminal=True, color_system="truecolor", soft_wrap=True))
    text = "It is\x1b[2J\x1b]0;title\x07 the\x9b31m east\u202e"
    for args in ((), ("--unit", "0:1"), ("--find",)):
        code, out, err = run(capsys, "show", path, "--text", text, *args)
        assert code == 0, err
        assert re.search(r"\x1b\[[0-9;]*48;2;", out)  # coloured (truecolor backgrounds)
        assert "\x07" not in out and "\x9b" not in out and "\u202e" not in out
        assert "\x1b" not in re.sub(r"\x1b\[[0-9;]*m", "", out)  # only colour codes, none from the text
        assert "␛[2J␛]0;title␇" in re.sub(r"\x1b\[[0-9;]*m", "", out)
        assert "<U+009B>" in out and "<U+202E>" in out


def test_find_and_saturation_and_top_in_the_terminal(tmp_path, capsys):
    path = save(tmp_path, make_ck("lstm", 2))
    code, out, err = run(capsys, "show", path, "--text", STREAM_TEXT, "--find")
    assert code == 0, err
    assert "inside quotes" in out and "indentation" in out and "coloured by the best of them" in out
    code, out, err = run(capsys, "show", path, "--text", STREAM_TEXT, "--saturation")
    assert code == 0, err
    assert "layer 1 gate o" in out and out.count("mostly closed") == 6
    code, out, err = run(capsys, "show", path, "--text", "It is the", "--top", "4", "--at", "3")
    assert code == 0, err
    assert "at character 3 'i'" in out and len(re.findall(r"^\s+\S+\s+\d+\.\d\d%$", out, re.M)) == 4
    code, out, err = run(capsys, "show", path, "--text", "It is the", "--at", "0")
    assert code == 0 and "at character 0 'I', the model expected:\n  nothing" in out  # a stream's first: context


def test_reads_stdin_and_cuts_to_chars(tmp_path, capsys, monkeypatch):
    import io

    path = save(tmp_path, make_ck("rnn", 1))
    monkeypatch.setattr("sys.stdin", io.StringIO(STREAM_TEXT))
    code, out, err = run(capsys, "show", path, "-", "--chars", "50", "--json")
    assert code == 0, err
    assert "".join(c["char"] for c in json.loads(out)["text"]) == STREAM_TEXT[:50]


@pytest.mark.parametrize("args,message,code", [
    (("--unit", "x"), "--unit must be LAYER:UNIT", 2),
    (("--unit", "2:0"), "no layer 2; the model has 2 (0 to 1)", 2),
    (("--unit", "0:8"), "no unit 8; layers have 8 (0 to 7)", 2),
    (("--unit", "0:1", "--gate", "i"), "a gru cell has no gate 'i' (it has r, u, n)", 2),
    (("--gate", "r"), "--gate needs --unit", 2),
    (("--unit", "0:1", "--find"), "choose one", 2),
    (("--chars", "0"), "--chars must be at least 1", 2),
    (("--at", "99"), "--at 99: the text shown has 4 characters", 2),
])
def test_option_errors(tmp_path, capsys, args, message, code):
    path = save(tmp_path, make_ck("gru", 2))
    got, out, err = run(capsys, "show", path, "--text", "It i", *args)
    assert got == code and err.startswith("Error: ") and message in err and err.count("\n") == 1


def test_input_errors(tmp_path, capsys):
    path = save(tmp_path, make_ck("rnn", 1))
    got, _, err = run(capsys, "show", path, "--text", "")
    assert got == 1 and err == "Error: the text is empty: nothing to show\n"
    got, _, err = run(capsys, "show", path, "--text", "It", "--gate", "h", "--unit", "0:0")
    assert got == 2 and "a rnn cell has no gate 'h' (it has none)" in err
    got, _, err = run(capsys, "show", path, "--text", "It", "--saturation")
    assert got == 1 and "an rnn cell has none" in err
    got, _, err = run(capsys, "show", path)
    assert got == 2 and "FILE, - for stdin, or --text" in err
    (tmp_path / "t.txt").write_text("It")
    got, _, err = run(capsys, "show", path, tmp_path / "t.txt", "--text", "It")
    assert got == 2 and "one of them" in err
    got, _, err = run(capsys, "show", path, "--text", "It", "--html", tmp_path / "nope" / "p.html")
    assert got == 1 and err == f"Error: {tmp_path / 'nope'}: no such folder for the page\n"
    got, _, err = run(capsys, "show", path, tmp_path / "missing.txt")
    assert got == 1 and "no such file" in err


@pytest.mark.parametrize("cell,layers,mode", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_kind_of_checkpoint(tmp_path, capsys, cell, layers, mode, dtype):
    path = save(tmp_path, make_ck(cell, layers, mode=mode, dtype=dtype))
    text = STREAM_TEXT[:200] if mode == Mode.STREAM else LINES_TEXT
    gate = [] if cell == "rnn" else ["--gate", cells.GATE_ORDER[cell][1]]
    for args in (["--json"], ["--unit", f"{layers - 1}:2", *gate, "--json"], ["--find", "--json"],
                 ["--html", tmp_path / "p.html"]):
        code, out, err = run(capsys, "show", path, "--text", text, *args)
        assert code == 0, err
        if "--json" in args:
            d = json.loads(out)
            values = [c.get("value", c.get("bits")) for c in d.get("text", [])]
            assert sum(v is not None for v in values) >= len(text) - (2 if mode == Mode.LINES else 1) - 1
    assert (tmp_path / "p.html").stat().st_size > 1000


# ---------------------------------------------------------------- the page


class SpanText(html.parser.HTMLParser):
    """The text of the page's character spans, its script elements, and its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.chars: list[str] = []
        self.scripts = 0
        self.tags: list[str] = []
        self._in_span = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.scripts += tag == "script"
        self._in_span = tag == "span" and any(k == "data-i" for k, _ in attrs)
        if self._in_span:
            self.chars.append("")

    def handle_endtag(self, tag):
        self._in_span = False

    def handle_data(self, data):
        if self._in_span:
            self.chars[-1] += data


def test_page_escapes_the_text(tmp_path):
    ck = make_ck("lstm", 2)
    text = 'To be</script><script>alert(1)</script> <b>bold</b> & "q" \x1b[31m\nor not'
    ids, _ = show.encode(text, ck.vocab, Mode.STREAM)
    page = show_html.page(ck, "a<b>.npz", text, ids)
    assert "<script>alert" not in page and "<b>" not in page and "a<b>.npz" not in page
    p = SpanText()
    p.feed(page)
    assert p.scripts == 2 and "b" not in p.tags  # only the page's own two scripts, no <b> element
    assert p.chars == [sr.safe_char(c) if c != "\n" else "⏎" for c in text]
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])
    assert data["n"] == len(text) and len(data["top"]) == len(text) and data["first"] == "surprise"
    assert not re.search(r"https?://|src=|href=\"(?!#)", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    assert page.count("<svg") == 6  # layers x sigmoid gates


def test_page_embeds_a_bounded_set_of_units(tmp_path):
    ck = make_ck("gru", 2, hidden=40)
    ids, _ = show.encode(STREAM_TEXT[:300], ck.vocab, Mode.STREAM)
    page = show_html.page(ck, "m.npz", STREAM_TEXT[:300], ids, show.UnitView(1, 39, "u"))
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S)[1])
    units = {k.split(":")[1:3].__str__() for k in data["values"]}
    assert len(units) <= 2 * show_html.PAGE_UNITS + 7 + 1  # per layer, + found, + asked
    assert data["first"] == "gate:1:39:u" and "gate:1:39:u" in data["values"]
    r = show.run_text(ck.params, ck.cfg, Mode.STREAM, ids, ("u",), logits=False)
    assert data["values"]["gate:1:39:u"] == [round(v * 1000) for v in r.value(1, 39, "u")]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    exe = chromium()
    assert exe is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={profile}", "--window-size=1200,900", *args],
                              capture_output=True, text=True, timeout=120)


def span_colours(dom: str) -> list[tuple[int, ...] | None]:
    out: list[tuple[int, ...] | None] = []
    for m in re.finditer(r'<span data-i="\d+"(?: class="unk")?(?: style="([^"]*)")?>', dom):
        c = re.search(r"background-color:\s*rgb\((\d+),\s*(\d+),\s*(\d+)\)", m[1] or "")
        out.append(tuple(int(x) for x in c.groups()) if c else None)
    return out


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="no chromium found")
def test_page_in_a_browser(tmp_path):
    ck = make_ck("lstm", 2, hidden=16)
    text = STREAM_TEXT[:400] + "</script><script>alert(1)</script><b>x</b>"
    ids, _ = show.encode(text, ck.vocab, Mode.STREAM)
    page_path = tmp_path / "page.html"
    page_path.write_text(show_html.page(ck, "m.npz", text, ids), encoding="utf-8")
    url = page_path.as_uri()
    first = run_chromium("--dump-dom", url)
    assert first.returncode == 0, first.stderr
    switched = run_chromium("--dump-dom", url + "#view=unit:0:5")
    r = show.run_text(ck.params, ck.cfg, Mode.STREAM, ids, ("h",), logits=False)
    bits = show.surprise(ck.params, ck.cfg, Mode.STREAM, ids, 16)
    assert '<span id="legend"><span' in first.stdout  # the script ran
    default, unit = span_colours(first.stdout), span_colours(switched.stdout)
    assert len(default) == len(unit) == len(text)
    # what the script drew is Python's scale, on the values as embedded (thousandths)
    assert default == [sr.surprise_rgb(round(b * 1000) / 1000 if np.isfinite(b) else b) for b in bits]
    assert unit == [sr.unit_rgb(round(v * 1000) / 1000) for v in r.value(0, 5)]
    assert unit != default
    assert switched.stdout.count("<svg") == 6 and switched.stdout.count("<circle") == 6 * 16
    assert "<b>" not in switched.stdout.split('id="text"')[1].split("</div>")[0]  # the text's <b> stayed text
    pinned = run_chromium("--dump-dom", url + "#view=gate:1:2:f&at=3").stdout
    tip = re.search(r'<div id="tip"[^>]*>(.*?)</div>', pinned, re.S)[1]
    f = show.run_text(ck.params, ck.cfg, Mode.STREAM, ids, ("f",), logits=False).value(1, 2, "f")[3]
    top_ids, top_p = show.top_predictions(show.run_text(ck.params, ck.cfg, Mode.STREAM, ids).logits, 5)
    assert tip.startswith("#3  E") and f"{bits[3]:.2f} bits" in tip and f"gate f: {f:.3f}" in tip
    assert f"  {sr.token_text(ck.vocab, int(top_ids[3, 0])):<6}{round(top_p[3, 0] * 1000) / 10:.1f}%" in tip
    shot = tmp_path / "page.png"
    got = run_chromium(f"--screenshot={shot}", url + "#view=unit:0:5")
    assert got.returncode == 0 and shot.stat().st_size > 10_000


@pytest.mark.parametrize("objective", ["masked", "neighbors"])
@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_bidirectional_surprise_hides_each_character_in_turn(mode, objective, tmp_path, capsys):
    """A bidirectional model's surprise at t is -log2 of its prediction with t hidden as <MASK>
    (for the neighbors objective, lines are read once, which must give the same); its units are
    the two directions side by side."""
    vocab = Vocab(" ,abcdeno")
    cfg = ModelConfig(len(vocab), "gru", 4, 2, bidirectional=True, dtype="float64", objective=objective)
    params = model.init_params(cfg, np.random.default_rng(0))
    text = "anna bob\ncone" if mode == "lines" else "a bad cane, a bonne done"
    meta = Meta(mode=Mode(mode), objective=cfg.objective, train=TrainConfig(seq_len=8))
    ck = Checkpoint(cfg, vocab, params, meta=meta)
    ids, _ = show.encode(text, vocab, Mode(mode))
    bits = show.surprise(params, cfg, Mode(mode), ids, 8)
    for t in range(8) if mode == "lines" else [2]:  # every character of "anna bob"; 'n' of the stream
        if mode == "lines":
            x = np.r_[EOS, ids[:8], EOS]  # its line, "anna bob", between two <EOS>
            x[t + 1] = len(vocab)
        else:
            x = ids[:8].astype(np.int64).copy()
            x[t] = len(vocab)
        logits = model.forward(params, cfg, x[:, None].astype(np.int32)).logits[:, 0].astype(np.float64)
        at = t + 1 if mode == "lines" else t
        p = np.exp(logits[at] - logits[at].max())
        p /= p.sum()
        assert bits[t] == pytest.approx(-np.log2(p[ids[t]]), rel=1e-9)
    if mode == "lines":
        assert np.isnan(bits[8]) and np.isfinite(bits[:8]).all()  # the newline is never hidden
    run_ = show.run_text(params, cfg, Mode(mode), ids, ("h",), logits=False)
    assert run_.values[1]["h"].shape == (len(ids), 8)  # 2 x 4 units
    checkpoint.save(tmp_path / "bi.npz", ck)
    code, out, err = run(capsys, "show", tmp_path / "bi.npz", "--text", text, "--unit", "1:7")
    assert code == 0, err
