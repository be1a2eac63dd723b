"""Issue #7: nothing a user does may produce a traceback, lose a trained model, or run
code hidden in a file.

Every user error is one `Error:` line on stderr and exit code 1 or 2. The CLI runs in
process through `charrnn.cli.main` unless a real process is needed (signals, memory).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ENV, NAMES_X3, TINY_H8_4STEPS, arrays_of, error_line, flat, run

import charrnn
from charrnn import checkpoint, data
from charrnn.errors import CharrnnError
from charrnn.train import Trainer

# ---------------------------------------------------------------- 1. bad text input


BAD_TEXTS = {
    # name: (bytes to write or None for no file, expected error after "Error: {path}: ")
    "missing": (None, "no such file"),
    "directory": ("dir", "is a directory, not a text file"),
    "empty": (b"", "the file is empty"),
    "whitespace": (b"  \n\t\n \r\n", "the file has only whitespace"),
    "binary": (b"PK\x03\x04\x00\x00\x01\x02abc\x00\xff" * 20,
               "looks like a binary file (it contains NUL bytes), not text"),
    "latin-1": ("caf\xe9\nna\xefve\nse\xf1or\n".encode("latin-1"),
                "not valid utf-8 (byte 3): pass --encoding (e.g. latin-1) or --errors replace"),
    "utf-16": ("hello\nworld\n".encode("utf-16"), "looks like a binary file (it contains NUL bytes), not text"),
}


def write_bad(tmp_path: Path, kind: str) -> tuple[Path, str]:
    content, message = BAD_TEXTS[kind]
    p = tmp_path / f"{kind}.txt"
    if content == "dir":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    return p, message


@pytest.mark.parametrize("kind", BAD_TEXTS)
def test_train_refuses_bad_text_in_one_line(tmp_path, capsys, kind):
    path, message = write_bad(tmp_path, kind)
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", *TINY_H8_4STEPS)
    assert error_line(code, err) == f"Error: {path}: {message}"
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("kind", BAD_TEXTS)
def test_eval_refuses_bad_text_in_one_line(tmp_path, capsys, good, kind):
    path, message = write_bad(tmp_path, kind)
    code, _, err = run(capsys, "eval", good / "names.npz", path)
    assert error_line(code, err) == f"Error: {path}: {message}"


def test_invalid_utf8_trains_with_the_encoding_it_hints_at(tmp_path, capsys):
    path, _ = write_bad(tmp_path, "latin-1")
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", path, "--out", out, "--encoding", "latin-1", *TINY_H8_4STEPS)
    assert code == 0, err
    assert {"é", "ï", "ñ"} <= set(checkpoint.load(out).vocab.chars)
    code, _, err = run(capsys, "train", path, "--out", out, "--errors", "replace", *TINY_H8_4STEPS)
    assert code == 0, err
    assert "\ufffd" in checkpoint.load(out).vocab.chars
    code, stdout, err = run(capsys, "eval", out, path, "--encoding", "latin-1", "--json")
    assert code == 0, err
    assert json.loads(stdout)["unk_chars"] == 3  # é ï ñ were not in the --errors replace vocabulary


def test_text_that_decodes_to_lone_surrogates_is_refused(tmp_path, capsys):
    path = tmp_path / "escaped.txt"
    path.write_text("ab\\ud800cd\nef\n")  # fine as unicode_escape, but not printable text
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", "--encoding", "unicode_escape",
                       *TINY_H8_4STEPS)
    assert error_line(code, err) == (f"Error: {path}: decodes to unpaired surrogates, which are not text: "
                                     "check --encoding")


def test_utf16_with_its_encoding_trains(tmp_path, capsys):
    path, _ = write_bad(tmp_path, "utf-16")
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", "--encoding", "utf-16", *TINY_H8_4STEPS)
    assert code == 0, err
    assert checkpoint.load(tmp_path / "m.npz").vocab.chars == "dehlorw"


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_text_shorter_than_one_sequence_trains_with_a_note(tmp_path, capsys, mode):
    path = tmp_path / "short.txt"
    path.write_text("hello world\n")
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", path, "--out", out, "--mode", mode, "--seq-len", "64", "--batch-size", "8",
                       *TINY_H8_4STEPS)
    assert code == 0, err
    ck = checkpoint.load(out)
    assert ck.meta["progress"]["step"] == 4
    if mode == "stream":  # 12 ids, 11 for training: one stream of 10 steps
        assert "Note: batch size 8 -> 1: the text is short" in err
        assert "Note: sequence length 64 -> 10: the text is shorter than one sequence" in err
        assert ck.meta["train"]["seq_len"] == 10
    else:  # one line: no validation split, the only line is the batch
        assert ck.meta["train"]["batch_size"] == 1


def test_two_character_text_trains(tmp_path, capsys):
    path = tmp_path / "hi.txt"
    path.write_text("hi")
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", *TINY_H8_4STEPS)
    assert code == 0, err
    assert "Note: sequence length 64 -> 1: the text is shorter than one sequence" in err


def test_one_character_text_is_refused(tmp_path, capsys):
    path = tmp_path / "x.txt"
    path.write_text("x")
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", "--mode", "stream", *TINY_H8_4STEPS)
    assert error_line(code, err) == "Error: the training text needs at least 2 characters"


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_one_repeated_character_trains_and_samples(tmp_path, capsys, mode):
    path = tmp_path / "a.txt"
    path.write_text("a" * 3000 if mode == "stream" else "aaa\n" * 300)
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", path, "--out", out, "--mode", mode, "--seq-len", "16", *TINY_H8_4STEPS)
    assert code == 0, err
    assert checkpoint.load(out).vocab.chars == "a"
    code, stdout, err = run(capsys, "sample", out, "-n", "3", "--length", "10", "--seed", "0")
    assert code == 0, err
    assert set(stdout) <= {"a", "\n"}


def peak_rss_run(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, int]:
    """Run `charrnn args` in a fresh process; also return its peak resident memory in MB."""
    code = ("import atexit, resource, sys\n"
            "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " file=sys.stderr))\n"
            "from charrnn.cli import main\nmain(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    kb = int(re.search(r"PEAK_RSS_KB (\d+)", r.stderr).group(1))
    return r, kb // 1024


def long_line_case(tmp_path: Path, megabytes: int, timeout: float) -> None:
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ", dtype=np.uint8)
    line = letters[rng.integers(0, len(letters), megabytes * 1_000_000)].tobytes()
    path = tmp_path / "long.txt"
    with open(path, "wb") as f:
        f.write(NAMES_X3.encode())
        f.write(line + b"\n")
        f.write(NAMES_X3.encode())
    del line
    out = tmp_path / "m.npz"
    small = tmp_path / "small.txt"
    small.write_text(NAMES_X3)
    args = ["--mode", "lines", "--seq-len", "32", "--val-fraction", "0", "--hidden-size", "8", "--steps", "2",
            "--eval-every", "2", "--quiet"]
    # the interpreter, numpy and BLAS thread buffers cost the same whatever the text: measure them once
    _, base = peak_rss_run(["train", small, "--out", tmp_path / "small.npz", *args], timeout)
    r, mb = peak_rss_run(["train", path, "--out", out, *args], timeout)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "Note: 1 lines longer than --seq-len 32 are cut" in r.stderr
    # the text is read, counted and encoded once (str + uint8 ids + bytes), never padded into batches
    assert mb < base + 50 + 12 * megabytes, f"peak memory {mb} MB for a {megabytes} MB line (baseline {base} MB)"
    r, mb = peak_rss_run(["eval", out, path, "--json"], timeout)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chars"] == megabytes * 1_000_000 + 1 + 2 * len(NAMES_X3)  # each line with its <EOS>
    assert mb < base + 50 + 12 * megabytes, f"peak memory {mb} MB evaluating a {megabytes} MB line (baseline {base} MB)"


def test_single_long_line_in_lines_mode_is_cut(tmp_path):
    long_line_case(tmp_path, 2, timeout=120)


@pytest.mark.slow
def test_single_50mb_line_in_lines_mode_is_cut(tmp_path):
    long_line_case(tmp_path, 50, timeout=900)


def cjk_text(distinct: int, seed: int = 0) -> str:
    """Every character of the CJK blocks up to `distinct`, with Zipf-like repeats of the first ones."""
    blocks = [range(0x4E00, 0xA000), range(0x3400, 0x4DC0), range(0x20000, 0x2A6E0)]
    cps = [cp for block in blocks for cp in block][:distinct]
    rng = np.random.default_rng(seed)
    common = rng.zipf(1.5, 20_000) % 200  # the 200 first characters are frequent
    return "".join(map(chr, cps)) + "".join(chr(cps[i]) for i in common)


def test_thousands_of_cjk_characters_kept_sane_by_max_vocab_and_min_count(tmp_path, capsys):
    path = tmp_path / "cjk.txt"
    path.write_text(cjk_text(5000), encoding="utf-8")
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", path, "--out", out, "--mode", "stream", "--max-vocab", "100", *TINY_H8_4STEPS)
    assert code == 0, err
    assert len(checkpoint.load(out).vocab) == 102
    assert "characters of the text are <UNK>" in err
    code, _, err = run(capsys, "train", path, "--out", out, "--mode", "stream", "--min-count", "3", *TINY_H8_4STEPS)
    assert code == 0, err
    kept = checkpoint.load(out).vocab.chars
    text = path.read_text(encoding="utf-8")
    assert 3 < len(kept) <= 200 and all(text.count(c) >= 3 for c in kept)
    code, stdout, err = run(capsys, "sample", out, "-n", "2", "--length", "20", "--seed", "0")
    assert code == 0 and "\ufffd" not in stdout


def test_more_distinct_characters_than_ids_asks_for_min_count(tmp_path, capsys):
    path = tmp_path / "cjk.txt"
    path.write_text(cjk_text(70_000), encoding="utf-8")
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", "--mode", "stream", *TINY_H8_4STEPS)
    assert error_line(code, err) == "Error: 70000 distinct characters is too many: use --min-count or --max-vocab"
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", "--mode", "stream", "--max-vocab", "300",
                       *TINY_H8_4STEPS)
    assert code == 0, err


def test_min_count_that_keeps_nothing_is_explained(tmp_path, capsys):
    path = tmp_path / "u.txt"
    path.write_text("abcdefghij")
    code, _, err = run(capsys, "train", path, "--out", tmp_path / "m.npz", "--min-count", "2", *TINY_H8_4STEPS)
    assert "--min-count" in error_line(code, err)


# ---------------------------------------------------------------- 2. bad options, refused before any work


BAD_TRAIN_OPTIONS = [
    (["--hidden-size", "-1"], "--hidden-size"),
    (["--layers", "0"], "--layers"),
    (["--batch-size", "-5"], "--batch-size"),
    (["--seq-len", "0"], "--seq-len"),
    (["--steps", "-1"], "--steps"),
    (["--epochs", "-2"], "--epochs"),
    (["--time", "-1"], "--time"),
    (["--eval-every", "0"], "--eval-every"),
    (["--patience", "-1"], "--patience"),
    (["--min-count", "0"], "--min-count"),
    (["--max-vocab", "-1"], "--max-vocab"),
    (["--clip", "-1"], "--clip"),
    (["--cell", "transformer"], "--cell"),
    (["--mode", "words"], "--mode"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--dtype", "float16"], "--dtype"),
    (["--seed", "-1"], "--seed"),
    (["--lr", "abc"], "--lr"),
    (["--val-fraction", "1"], "Error: --val-fraction must be in [0, 1), not 1.0"),
    (["--val-fraction", "-0.1"], "--val-fraction"),
    (["--dropout", "1"], "Error: --dropout must be in [0, 1), not 1.0"),
    (["--dropout", "-0.5"], "--dropout"),
    (["--lr", "0"], "Error: --lr must be positive, not 0.0"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "inf"], "Error: --lr must be positive, not inf"),
    (["--lr", "nan"], "--lr"),
    (["--lr-decay", "0"], "Error: --lr-decay must be in (0, 1], not 0.0"),
    (["--encoding", "no-such-codec"], "Error: unknown encoding 'no-such-codec'"),
    (["--errors", "sloppy"], "--errors"),
]


@pytest.mark.parametrize("args,expected", BAD_TRAIN_OPTIONS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_train_refuses_bad_options_by_name_before_reading(tmp_path, capsys, monkeypatch, names_x3_file, args, expected):
    def no_work(*a, **k):
        raise AssertionError("the text was read before the options were checked")

    monkeypatch.setattr(data, "read_text", no_work)
    code, _, err = run(capsys, "train", names_x3_file, "--out", tmp_path / "m.npz", *args)
    line = error_line(code, err)
    assert line.startswith(expected) if expected.startswith("Error:") else expected in line
    assert not (tmp_path / "m.npz").exists()


BAD_SAMPLE_OPTIONS = [
    (["--top-p", "1.5"], "--top-p"),
    (["--top-p", "0"], "Error: --top-p must be in (0, 1], not 0.0"),
    (["--top-p", "-1"], "--top-p"),
    (["--top-p", "nan"], "--top-p"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "inf"], "Error: --temperature must be 0 or more, not inf"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-k", "-1"], "--top-k"),
    (["-n", "0"], "--num"),
    (["--length", "0"], "--length"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "x"], "--seed"),
]


@pytest.mark.parametrize("args,expected", BAD_SAMPLE_OPTIONS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_sample_refuses_bad_options_by_name_before_loading(capsys, monkeypatch, good, args, expected):
    def no_work(*a, **k):
        raise AssertionError("the checkpoint was loaded before the options were checked")

    monkeypatch.setattr(checkpoint, "load", no_work)
    code, _, err = run(capsys, "sample", good / "names.npz", *args)
    line = error_line(code, err)
    assert line.startswith(expected) if expected.startswith("Error:") else expected in line


@pytest.mark.parametrize("args", [["train", "--bogus"], ["sample"], ["frobnicate"], ["eval", "only-one-arg.npz"],
                                  ["inspect", "a.npz", "b.npz"]])
def test_usage_errors_are_one_line(capsys, args):
    code, _, err = run(capsys, *args)
    error_line(code, err)


def test_cannot_change_the_model_when_resuming(tmp_path, capsys, good):
    ck = tmp_path / "r.npz"
    ck.write_bytes((good / "names.npz").read_bytes())
    code, _, err = run(capsys, "train", good / "names.txt", "--resume", ck, "--hidden-size", "32")
    assert error_line(code, err) == ("Error: --hidden-size cannot change when resuming (the checkpoint has 8); "
                                     "train a new model instead")
    assert ck.read_bytes() == (good / "names.npz").read_bytes()


def test_refuses_to_overwrite_something_that_is_not_a_checkpoint(tmp_path, capsys, names_x3_file):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    code, _, err = run(capsys, "train", names_x3_file, "--out", precious, *TINY_H8_4STEPS)
    assert "refusing to overwrite" in error_line(code, err)
    assert precious.read_text() == "my notes"
    code, _, err = run(capsys, "train", names_x3_file, "--out", tmp_path / "no" / "such" / "m.npz", *TINY_H8_4STEPS)
    assert "no such folder" in error_line(code, err)


# ---------------------------------------------------------------- 3. checkpoints are data, never code


class Evil:
    """Unpickling this creates a file: proof that an object array was unpickled."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def meta_array(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def rewritten(src: Path, dst: Path, meta=None, **arrays) -> None:
    """Copy checkpoint `src` to `dst` with its meta dict changed by `meta` and arrays replaced."""
    a = arrays_of(src)
    if meta is not None:
        m = json.loads(a["meta"].tobytes())
        meta(m)
        a["meta"] = meta_array(m)
    for k, v in arrays.items():
        if v is None:
            a.pop(k.replace("__", "."))
        else:
            a[k.replace("__", ".")] = v
    with open(dst, "wb") as f:
        np.savez(f, **a)


def flip(b: bytes, at: int, n: int = 16) -> bytes:
    return b[:at] + bytes(x ^ 0xFF for x in b[at:at + n]) + b[at + n:]


WHY = "not a usable charrnn checkpoint"
OBJECTS = "not a usable charrnn checkpoint (it holds Python objects, which are never loaded)"


def bad_checkpoint(kind: str, src: Path, dst: Path) -> str:
    """Write a damaged or foreign file of `kind` to dst; returns the expected error after 'Error: {dst}: '."""
    valid = src.read_bytes()
    a = arrays_of(src)
    if kind == "object-array":
        a["param.W_y"] = np.array([Evil()], dtype=object)
        np.savez(dst, **a)
        return OBJECTS
    if kind == "object-meta":
        a["meta"] = np.array([Evil(), {"format_version": 1}], dtype=object)
        np.savez(dst, **a)
        return OBJECTS
    if kind == "pickle-file":  # a raw pickle renamed .npz: np.load would unpickle it if allowed
        import pickle

        dst.write_bytes(pickle.dumps(Evil()))
        return OBJECTS
    if kind == "truncated-half":
        dst.write_bytes(valid[: len(valid) // 2])
        return WHY
    if kind == "truncated-end":
        dst.write_bytes(valid[:-7])
        return WHY
    if kind == "empty":
        dst.write_bytes(b"")
        return WHY
    if kind == "flipped-middle":
        dst.write_bytes(flip(valid, len(valid) // 2))
        return WHY
    if kind == "flipped-meta":
        dst.write_bytes(flip(valid, valid.index(b'"format_version"') + 3, 4))
        return WHY
    if kind == "other-program":
        np.savez(dst, x=np.arange(10), y=np.eye(3))
        return f"{WHY} (no metadata: was it written by another program?)"
    if kind == "npy-not-npz":
        with open(dst, "wb") as f:
            np.save(f, np.arange(10))
        return WHY
    if kind == "text-file":
        dst.write_text("hello, I am not a checkpoint\n")
        return f"{WHY} (not an .npz file)"
    if kind == "zip-of-text":
        import zipfile

        with zipfile.ZipFile(dst, "w") as z:
            z.writestr("readme.txt", "hello")
        return WHY
    if kind == "newer-version":
        rewritten(src, dst, meta=lambda m: m.update(format_version=99))
        return f"{WHY} (format version 99 is newer than this charrnn reads (1): upgrade charrnn)"
    if kind == "no-version":
        rewritten(src, dst, meta=lambda m: m.pop("format_version"))
        return f"{WHY} (no format version)"
    if kind == "meta-not-json":
        np.savez(dst, **dict(a, meta=np.frombuffer(b"{not json", dtype=np.uint8)))
        return WHY
    if kind == "meta-a-list":
        np.savez(dst, **dict(a, meta=np.frombuffer(b"[1, 2]", dtype=np.uint8)))
        return f"{WHY} (damaged metadata)"
    if kind == "wrong-shape":
        w = a["param.W_y"]
        rewritten(src, dst, param__W_y=np.zeros((w.shape[0] + 1, w.shape[1]), w.dtype))
        H, V = w.shape
        return f"{WHY} (param.W_y is float32[{H + 1}, {V}], config says float32[{H}, {V}])"
    if kind == "wrong-dtype":
        rewritten(src, dst, param__W_y=a["param.W_y"].astype(np.float64))
        return WHY
    if kind == "missing-array":
        rewritten(src, dst, param__b_y=None)
        return WHY
    if kind == "nan-weights":
        w = a["param.W_h0"].copy()
        w[0, 0] = np.nan
        rewritten(src, dst, param__W_h0=w)
        return f"{WHY} (param.W_h0 has NaN or infinite values)"
    if kind == "unknown-cell":
        rewritten(src, dst, meta=lambda m: m["model"].update(cell="transformer"))
        return WHY
    if kind == "vocab-mismatch":
        rewritten(src, dst, meta=lambda m: m.update(vocab=m["vocab"][:-1]))
        return WHY
    if kind == "vocab-unsorted":
        rewritten(src, dst, meta=lambda m: m.update(vocab=m["vocab"][::-1]))
        return WHY
    if kind == "surrogate-vocab":  # sampling would print a character no encoding can write
        rewritten(src, dst, meta=lambda m: m.update(vocab=m["vocab"] + "\ud800"))
        return WHY
    if kind == "billion-layers":  # must be refused at once, not by building a billion shapes
        rewritten(src, dst, meta=lambda m: m["model"].update(layers=10**9))
        return WHY
    if kind == "string-sizes":
        rewritten(src, dst, meta=lambda m: m["model"].update(hidden_size="8"))
        return WHY
    if kind == "optimizer-mismatch":
        rewritten(src, dst, **{"opt__m.W_y": np.zeros((1, 1), np.float32)})
        return f"{WHY} (optimizer array opt.m.W_y does not match the parameters)"
    raise ValueError(kind)


BAD_CHECKPOINTS = ["object-array", "object-meta", "pickle-file", "truncated-half", "truncated-end", "empty",
                   "flipped-middle", "flipped-meta", "other-program", "npy-not-npz", "text-file", "zip-of-text",
                   "newer-version", "no-version", "meta-not-json", "meta-a-list", "wrong-shape", "wrong-dtype",
                   "missing-array", "nan-weights", "unknown-cell", "vocab-mismatch", "vocab-unsorted",
                   "surrogate-vocab", "billion-layers", "string-sizes", "optimizer-mismatch"]
COMMANDS = {
    "sample": lambda ck, text: ["sample", ck, "-n", "2"],
    "inspect": lambda ck, text: ["inspect", ck],
    "inspect-json": lambda ck, text: ["inspect", ck, "--json"],
    "eval": lambda ck, text: ["eval", ck, text],
    "resume": lambda ck, text: ["train", text, "--resume", ck, "--steps", "6", "--quiet"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, capsys, good, kind, command):
    Evil.marker = str(tmp_path / "UNPICKLED")
    bad = tmp_path / "bad.npz"
    expected = bad_checkpoint(kind, good / "names.npz", bad)
    before = bad.read_bytes()
    started = time.perf_counter()
    code, stdout, err = run(capsys, *COMMANDS[command](bad, good / "names.txt"))
    line = error_line(code, err)
    assert line.startswith(f"Error: {bad}: {expected}"), line
    assert time.perf_counter() - started < 5
    assert not Path(Evil.marker).exists(), "an object array was unpickled"
    assert bad.read_bytes() == before, "a refused checkpoint was changed"
    assert not list(tmp_path.glob(".bad.npz.*")), "a temporary file was left behind"


def test_good_checkpoints_load_for_every_command(capsys, good, tmp_path):
    """The fixture is sound, so the refusals above are about the damage."""
    for command, args in COMMANDS.items():
        ck = tmp_path / "ok.npz"
        ck.write_bytes((good / "names.npz").read_bytes())
        code, _, err = run(capsys, *args(ck, good / "names.txt"))
        assert code == 0, (command, err)


def test_no_module_unpickles():
    src = Path(charrnn.__file__).parent
    for py in sorted(src.glob("*.py")):
        text = py.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve|marshal)\b", text, re.M), py.name
        assert not re.search(r"allow_pickle\s*=\s*True", text), py.name
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (py.name, call)


def test_checkpoint_load_raises_only_charrnn_error(tmp_path, good):
    Evil.marker = str(tmp_path / "UNPICKLED")
    for kind in BAD_CHECKPOINTS:
        bad = tmp_path / f"{kind}.npz"
        bad_checkpoint(kind, good / "names.npz", bad)
        with pytest.raises(CharrnnError):
            checkpoint.load(bad)
    assert not Path(Evil.marker).exists()


# ---------------------------------------------------------------- 4. no lost work


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, capsys, monkeypatch, names_x3_file):
    ck = tmp_path / "m.npz"
    assert run(capsys, "train", names_x3_file, "--out", ck, *TINY_H8_4STEPS)[0] == 0
    before = ck.read_bytes()
    real_savez = np.savez

    def disk_full(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(f.tell() // 2)  # half the bytes reached the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", disk_full)
    code, _, err = run(capsys, "train", names_x3_file, "--resume", ck, "--steps", "8", "--quiet")
    line = error_line(code, err)
    assert line.startswith(f"Error: {ck}: cannot save the checkpoint (No space left on device)"), line
    assert ck.read_bytes() == before
    assert checkpoint.load(ck).meta["progress"]["step"] == 4
    assert not list(tmp_path.glob(".m.npz.*")), "the half-written temporary file was left behind"


def test_failed_rename_keeps_the_previous_one(tmp_path, capsys, monkeypatch, names_x3_file):
    ck = tmp_path / "m.npz"
    assert run(capsys, "train", names_x3_file, "--out", ck, *TINY_H8_4STEPS)[0] == 0
    before = ck.read_bytes()

    def no_rename(a, b):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.os, "replace", no_rename)
    code, _, err = run(capsys, "train", names_x3_file, "--resume", ck, "--steps", "8", "--quiet")
    assert error_line(code, err).startswith(f"Error: {ck}: cannot save the checkpoint (Permission denied)")
    assert ck.read_bytes() == before
    assert not list(tmp_path.glob(".m.npz.*"))


def test_unwritable_folder_is_an_error_line(tmp_path, capsys, monkeypatch, names_x3_file):
    def no_temp(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", no_temp)
    code, _, err = run(capsys, "train", names_x3_file, "--out", tmp_path / "m.npz", *TINY_H8_4STEPS)
    assert error_line(code, err).startswith(f"Error: {tmp_path / 'm.npz'}: cannot save the checkpoint")


@pytest.mark.parametrize("sig,code,name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_real_signal_saves_and_resumes(tmp_path, capsys, names_x3_file, sig, code, name):
    ck = tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", names_x3_file, "--out", ck, "--steps", "100000",
                             "--eval-every", "5", "--hidden-size", "8", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ck.exists(), "no checkpoint appeared"
        proc.send_signal(sig)
        stdout, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    stopped = checkpoint.load(ck)
    step = stopped.meta["progress"]["step"]
    assert step >= 5 and stopped.meta["stop_reason"] == "interrupted"
    assert f"{name}: saved {ck} at step {step:,}. Resume with:" in flat(err)
    assert f"charrnn train {names_x3_file} --resume {ck}" in err
    rc, _, err = run(capsys, "train", names_x3_file, "--resume", ck, "--steps", step + 3, "--quiet")
    assert rc == 0, err
    resumed = checkpoint.load(ck)
    assert resumed.meta["progress"]["step"] == step + 3
    assert np.array_equal(resumed.train_losses[:step], stopped.train_losses)


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys, names_x3_file):
    ck = tmp_path / "m.npz"
    assert run(capsys, "train", names_x3_file, "--out", ck, *TINY_H8_4STEPS)[0] == 0
    before = ck.read_bytes()
    # a huge step overflows float32 at once; the evaluation right after it must not be saved
    code, _, err = run(capsys, "train", names_x3_file, "--resume", ck, "--lr", "1e39", "--clip", "0", "--steps", "50",
                       "--eval-every", "1", "--quiet")
    line = error_line(code, err)
    assert "NaN or infinite" in line or "the loss became" in line, line
    assert "the checkpoint keeps the last good state" in line
    assert ck.read_bytes() == before
    assert checkpoint.load(ck).meta["progress"]["step"] == 4


def test_nan_loss_mid_run_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch, names_x3_file):
    from charrnn import model

    ck = tmp_path / "m.npz"
    real = model.loss_and_grads
    calls = [0]

    def nan_at_step_7(*a, **k):
        calls[0] += 1
        loss, grads, state = real(*a, **k)
        return (float("nan") if calls[0] == 7 else loss), grads, state

    monkeypatch.setattr(model, "loss_and_grads", nan_at_step_7)
    code, _, err = run(capsys, "train", names_x3_file, "--out", ck, "--hidden-size", "8", "--steps", "20",
                       "--eval-every", "3", "--quiet")
    assert error_line(code, err) == ("Error: the loss became nan at step 7; the checkpoint keeps the last good "
                                     "state: try a lower --lr or a smaller --clip")
    assert checkpoint.load(ck).meta["progress"]["step"] == 6


# ---------------------------------------------------------------- 5. exact resume


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["lines", "stream"])
@pytest.mark.parametrize("split", [6, 7])  # on an evaluation step (every 3), and between two (like Ctrl-C)
def test_resume_is_bit_for_bit(tmp_path, capsys, monkeypatch, good, cell, mode, split):
    text = good / ("names.txt" if mode == "lines" else "prose.txt")
    if split % 3:  # every evaluation a plateau, so an extra one that counted would cut the rate (x0.1)
        monkeypatch.setattr(Trainer, "evaluate", lambda self, params=None: 2.0)
    common = ["--mode", mode, "--cell", cell, "--hidden-size", "12", "--layers", "2", "--dropout", "0.2",
              "--seq-len", "16", "--batch-size", "4", "--eval-every", "3", "--lr-plateau", "0.1", "--quiet"]
    whole, halves = tmp_path / "whole.npz", tmp_path / "halves.npz"
    assert run(capsys, "train", text, "--out", whole, "--steps", "12", *common)[0] == 0
    assert run(capsys, "train", text, "--out", halves, "--steps", str(split), *common)[0] == 0
    code, _, err = run(capsys, "train", text, "--resume", halves, "--steps", "12", "--quiet")
    assert code == 0, err
    a, b = arrays_of(whole), arrays_of(halves)
    assert set(a) == set(b)
    # the extra evaluation at a split between scheduled ones is in the history and may pick other
    # best weights; everything that steers training must be identical
    kept = ("param", "opt", "state", "line_hashes") + (("best", "history") if split % 3 == 0 else ())
    compared = [k for k in a if k.split(".")[0] in kept]
    assert any(k.startswith("opt.") for k in compared) and any(k.startswith("param.") for k in compared)
    for k in compared:
        assert np.array_equal(a[k], b[k]), k
    ma, mb = (json.loads(x["meta"].tobytes()) for x in (a, b))
    for key in ("progress", "corpus") + (("best_val_loss",) if split % 3 == 0 else ()):
        assert ma[key] == mb[key], key


# ---------------------------------------------------------------- odds and ends a user can do


def test_sample_into_a_closed_pipe_is_quiet(good):
    r = subprocess.run(f"{sys.executable} -m charrnn sample {good / 'prose.npz'} -n 50 --length 400 | head -c 10",
                       shell=True, capture_output=True, text=True, timeout=60, env=ENV)
    assert "Traceback" not in r.stderr and "Error" not in r.stderr


def test_eval_of_one_character_in_stream_mode(tmp_path, capsys, good):
    one = tmp_path / "one.txt"
    one.write_text("I")
    code, _, err = run(capsys, "eval", good / "prose.npz", one)
    assert error_line(code, err) == f"Error: {one}: needs at least 2 characters to score"


def test_checkpoint_path_is_a_directory(tmp_path, capsys, good):
    for args in (["sample", tmp_path], ["inspect", tmp_path], ["eval", tmp_path, good / "names.txt"]):
        code, _, err = run(capsys, *args)
        assert error_line(code, err) == f"Error: {tmp_path}: is a directory, not a checkpoint"


@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_resume_on_a_much_shorter_text(tmp_path, capsys, mode):
    long, short = tmp_path / "long.txt", tmp_path / "short.txt"
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), rng.integers(3, 9))) for _ in range(300)]
    long.write_text("\n".join(words) + "\n" if mode == "lines" else " ".join(words) * 3)
    short.write_text("\n".join(words[:5]) + "\n" if mode == "lines" else " ".join(words[:20]))
    ck = tmp_path / "m.npz"
    common = ["--mode", mode, "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--eval-every", "10",
              "--quiet"]
    assert run(capsys, "train", long, "--out", ck, "--steps", "20", *common)[0] == 0
    code, _, err = run(capsys, "train", short, "--resume", ck, "--steps", "25", "--quiet")
    assert code == 0, err
    assert "this text differs from the one the checkpoint was trained on" in err
    assert checkpoint.load(ck).meta["progress"]["step"] == 25
