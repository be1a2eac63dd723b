"""Bad and odd text files given to `charrnn train` and `charrnn eval`: missing, empty,
binary, other encodings, too short, one character, thousands of CJK characters, one very
long line (with its peak memory, in a fresh process).

Every refusal is one `Error:` line on stderr and exit code 1 or 2, before any model is
written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ENV, NAMES_X3, TINY_H8_4STEPS, error_line, run

from charrnn import checkpoint

# ---------------------------------------------------------------- files that are not usable text


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
    "utf-16": ("hello\nworld\n".encode("utf-16"), "looks like UTF-16 text: pass --encoding utf-16"),
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


# ---------------------------------------------------------------- other encodings


def test_invalid_utf8_trains_with_the_encoding_it_hints_at(tmp_path, capsys):
    path, _ = write_bad(tmp_path, "latin-1")
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", path, "--out", out, "--encoding", "latin-1", *TINY_H8_4STEPS)
    assert code == 0, err
    assert {"é", "ï", "ñ"} <= set(checkpoint.load(out).vocab.chars)
    code, _, err = run(capsys, "train", path, "--out", out, "--errors", "replace", "--force", *TINY_H8_4STEPS)
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


# ---------------------------------------------------------------- very short texts


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_text_shorter_than_one_sequence_trains_with_a_note(tmp_path, capsys, mode):
    path = tmp_path / "short.txt"
    path.write_text("hello world\n")
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", path, "--out", out, "--mode", mode, "--seq-len", "64", "--batch-size", "8",
                       *TINY_H8_4STEPS)
    assert code == 0, err
    ck = checkpoint.load(out)
    assert ck.meta.progress.step == 4
    if mode == "stream":  # 12 ids, 11 for training: one stream of 10 steps
        assert "Note: batch size 8 -> 1: the text is short" in err
        assert "Note: sequence length 64 -> 10: the text is shorter than one sequence" in err
        assert ck.meta.train.seq_len == 10
    else:  # one line: no validation split, the only line is the batch
        assert ck.meta.train.batch_size == 1


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
    texts = [line for line in stdout.splitlines() if not line.startswith("=== sample")]
    assert set("".join(texts)) == {"a"}


def test_eval_of_one_character_in_stream_mode(tmp_path, capsys, good):
    one = tmp_path / "one.txt"
    one.write_text("I")
    code, _, err = run(capsys, "eval", good / "prose.npz", one)
    assert error_line(code, err) == f"Error: {one}: needs at least 2 characters to score"


# ---------------------------------------------------------------- one very long line


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


# ---------------------------------------------------------------- many distinct characters


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
    code, _, err = run(capsys, "train", path, "--out", out, "--mode", "stream", "--min-count", "3", "--force",
                       *TINY_H8_4STEPS)
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


@pytest.mark.parametrize("encoding, hint", [("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"),
                                            ("utf-16-be", "utf-16-be")])
def test_a_utf16_file_is_not_called_binary(tmp_path, capsys, encoding, hint):
    """#19 item 12: the NUL bytes of UTF-16 text point to --encoding, not to 'binary'."""
    p = tmp_path / "wide.txt"
    p.write_bytes("anna\nbob\ncarla\n".encode(encoding) * 20)
    code, _, err = run(capsys, "train", p, "--steps", 1)
    assert error_line(code, err) == f"Error: {p}: looks like UTF-16 text: pass --encoding {hint}"
    code, _, err = run(capsys, "train", p, "--steps", 1, "--hidden-size", 8, "--encoding", hint, "-q",
                       "--out", tmp_path / "m.npz")
    assert code == 0, err
