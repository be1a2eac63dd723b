"""Hostile input that would exhaust memory or time (issue #18 class 2) and well-formed files or
options whose values are hostile (class 3): each ends in one `Error:` line, quickly, without a
traceback. Files are built here by hand, with the numpy format functions, to say what they say."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from helpers import ENV, arrays_of, error_line, run

from charrnn import checkpoint, commands, limits


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


def npy_header(dtype: str, shape: tuple) -> bytes:
    """The .npy header alone: a file that says it holds `shape` without holding it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_npz(dst, arrays: dict, raw: dict | None = None, meta=None) -> None:
    """A checkpoint zip of `arrays` (the metadata's dict changed by `meta`) and raw members, compressed."""
    arrays = dict(arrays)
    if meta is not None:
        m = json.loads(arrays["meta"].tobytes())
        meta(m)
        arrays["meta"] = np.frombuffer(json.dumps(m).encode(), np.uint8)
    members = {f"{k}.npy": npy(v) for k, v in arrays.items()} | (raw or {})
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


def ok_line(code: int, err: str) -> None:
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.hostile(3)
@pytest.mark.parametrize("exc,said", [(MemoryError("Unable to allocate 74.5 GiB"), "out of memory"),
                                      (RecursionError("maximum recursion depth"), "input nested too deeply"),
                                      (OverflowError("cannot convert float infinity"), "a number too large"),
                                      (UnicodeError("undefined encoding"), "cannot be encoded or decoded")])
def test_last_resort_errors_are_one_line(capsys, monkeypatch, good, exc, said):
    def fail(*args):
        raise exc

    monkeypatch.setattr(commands, "run_inspect", fail)
    line = error_line(*run(capsys, "inspect", good / "names.npz")[::2])
    assert said in line and str(exc) in line


# ---------------------------------------------------------------- hostile option values (class 3)


@pytest.mark.parametrize("args,said", [
    (["--epochs", "inf"], "--epochs must be 0 or more and finite, not inf"),
    (["--time", "inf"], "--time must be 0 or more and finite, not inf"),
    (["--seq-len", "100001"], "--seq-len must be at most 100,000"),
    (["--encoding", "undefined"], "the 'undefined' codec decodes no text"),
    (["--encoding", "rot13"], "'rot13' is not a text encoding"),
    (["--encoding", "base64"], "'base64' is not a text encoding"),
])
@pytest.mark.hostile(3)
def test_unusable_option_values_are_refused_by_name(capsys, tmp_path, names_x3_file, args, said):
    line = error_line(*run(capsys, "train", names_x3_file, "--out", tmp_path / "m.npz", "--quiet", *args)[::2])
    assert said in line and not (tmp_path / "m.npz").exists()


@pytest.mark.hostile(3)
def test_a_codec_that_fails_on_the_text_is_one_error_line(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"anna\nbob\n" * 3)  # punycode raises a bare UnicodeError here
    line = error_line(*run(capsys, "train", bad, "--out", tmp_path / "m.npz", "--encoding", "punycode")[::2])
    assert "not valid punycode" in line


# ---------------------------------------------------------------- files that never end or never open (class 2)


@pytest.mark.hostile(2)
@pytest.mark.parametrize("command", ["inspect", "sample"])
def test_a_fifo_as_the_checkpoint_is_refused_at_once(capsys, tmp_path, command):
    fifo = tmp_path / "m.npz"
    os.mkfifo(fifo)
    assert error_line(*run(capsys, command, fifo)[::2]) == f"Error: {fifo}: is a FIFO (named pipe), not a checkpoint"


@pytest.mark.hostile(2)
@pytest.mark.parametrize("source,said", [("/dev/zero", "is a device"), ("/dev/urandom", "is a device"),
                                         ("fifo", "is a FIFO (named pipe)")])
def test_endless_text_files_are_refused_at_once(capsys, tmp_path, good, source, said):
    if source == "fifo":
        source = tmp_path / "fifo.txt"
        os.mkfifo(source)
    for args in (["train", source, "--out", tmp_path / "m.npz"], ["eval", good / "names.npz", source]):
        assert error_line(*run(capsys, *args)[::2]) == f"Error: {source}: {said}, not a text file"


@pytest.mark.hostile(2)
def test_a_text_larger_than_memory_is_refused_with_the_estimate(capsys, tmp_path, names_x3_file, monkeypatch):
    monkeypatch.setattr(limits, "available", lambda: 1000)
    line = error_line(*run(capsys, "train", names_x3_file, "--out", tmp_path / "m.npz")[::2])
    assert line.startswith(f"Error: reading {names_x3_file} (") and "of memory, 0 MB available" in line


# ---------------------------------------------------------------- sizes the options set (class 2)

LIMIT_2GB = "ulimit -v 2000000; "  # the old code's allocations fail fast under it instead of swapping


@pytest.mark.hostile(2)
@pytest.mark.parametrize("args,said", [
    (["--hidden-size", "100000"], "training a 1 × 100,000 lstm"),
    (["--layers", "1000000000"], "training a 1,000,000,000 × 8 lstm"),  # closed form: no billion layer specs
])
def test_training_larger_than_memory_is_refused_with_the_estimate(capsys, tmp_path, args, said):
    text = tmp_path / "t.txt"
    text.write_text("abcdefghij" * 10)
    line = error_line(*run(capsys, "train", text, "--out", tmp_path / "m.npz", "--hidden-size", "8", *args)[::2])
    assert said in line and "of memory," in line and "available" in line and not (tmp_path / "m.npz").exists()


@pytest.mark.hostile(2)
def test_the_estimate_is_for_the_batch_the_text_makes(capsys, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcdefghij" * 10)
    code, _, err = run(capsys, "train", text, "--out", tmp_path / "m.npz", "--hidden-size", "8", "--steps", "1",
                       "--batch-size", "100000", "--seq-len", "100000", "--mode", "stream", "--quiet")
    assert code == 0 and "batch size 100000 -> 1" in err, err  # 100,000 × 100,000 would be refused


@pytest.mark.hostile(2)
def test_a_65000_character_vocabulary_is_estimated_before_it_is_allocated(capsys, tmp_path, monkeypatch):
    text = tmp_path / "cjk.txt"
    text.write_text("".join(chr(0x4E00 + i) for i in range(20_000)) + "".join(chr(0xAC00 + i) for i in range(11_000))
                    + "".join(chr(0x20000 + i) for i in range(34_000)))
    monkeypatch.setattr(limits, "available", lambda: 200 * 2**20)
    line = error_line(*run(capsys, "train", text, "--out", tmp_path / "m.npz", "--quiet")[::2])
    assert "on a 65,002-character vocabulary" in line and "200 MB available" in line


@pytest.mark.hostile(2)
def test_sampling_any_number_runs_in_batches_and_head_ends_it(good):
    r = subprocess.run(LIMIT_2GB + f"{sys.executable} -m charrnn sample {good / 'names.npz'} -n 100000000 | head -n 3;"
                       " exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, text=True,
                       timeout=60, env=ENV)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.hostile(2)
def test_a_long_prime_runs_once_in_flat_memory(good):
    r = subprocess.run(LIMIT_2GB + f"{sys.executable} -m charrnn sample {good / 'names.npz'} -n 100 --length 5 "
                       f"--allow-seen --prime {'a' * 120_000}", shell=True, executable="/bin/bash",
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == 100


@pytest.mark.hostile(2)
def test_samples_larger_than_memory_are_refused_with_the_estimate(capsys, good):
    line = error_line(*run(capsys, "sample", good / "names.npz", "-n", "5000", "--length", "100000000")[::2])
    assert line.startswith("Error: sampling 1,000 × 100,000,000 characters at a time needs ~")


# ---------------------------------------------------------------- checkpoint members that would inflate (class 2)


def inflating(kind: str, src, dst) -> str:
    """Write a checkpoint whose members declare or inflate to more than the config allows; returns the
    expected reason."""
    a = arrays_of(src)
    if kind == "2^40-floats-declared":
        rest = {k: v for k, v in a.items() if k != "history.train"}
        write_npz(dst, rest, {"history.train.npy": npy_header("<f4", (1 << 40,)) + bytes(64)})
        return "history.train.npy is not as long as its header says"
    if kind == "weights-inflate":  # 64 MB of zeros in a 64 KB member, far beyond the config's shape
        write_npz(dst, dict(a, **{"param.W_y": np.zeros((4000, 4000), np.float32)}))
        H, V = a["param.W_y"].shape
        return f"param.W_y is float32[4000, 4000], config says float32[{H}, {V}]"
    if kind == "extra-parameter":
        write_npz(dst, dict(a, **{"best.W_z": np.zeros((4000, 4000), np.float32)}))
        return "best.W_z is not a parameter of the config"
    if kind == "history-longer-than-steps":
        write_npz(dst, dict(a, **{"history.train": np.zeros(10**6, np.float32)}))
        return "damaged training history (more losses than steps)"
    if kind == "hashes-beyond-the-text":
        write_npz(dst, dict(a, line_hashes=np.zeros(10**6, np.uint64)))
        return "damaged line hashes (more lines than characters)"
    if kind == "metadata-too-large":
        write_npz(dst, a, meta=lambda m: m.update(source="x" * (checkpoint.MAX_META + 1)))
        return "bytes of metadata (at most"
    raise ValueError(kind)


@pytest.mark.hostile(2)
@pytest.mark.parametrize("kind", ["2^40-floats-declared", "weights-inflate", "extra-parameter",
                                  "history-longer-than-steps", "hashes-beyond-the-text", "metadata-too-large"])
def test_members_are_checked_against_the_config_before_they_are_read(capsys, tmp_path, good, kind, monkeypatch):
    bad = tmp_path / "bad.npz"
    why = inflating(kind, good / "names.npz", bad)
    reads = []
    real_read = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda f, **kw: reads.append(1) or real_read(f, **kw))
    line = error_line(*run(capsys, "inspect", bad)[::2])
    assert line.startswith(f"Error: {bad}: not a usable charrnn checkpoint (") and why in line
    assert len(reads) <= 1  # the metadata at most: nothing else was inflated


@pytest.mark.hostile(2)
def test_members_the_format_does_not_define_are_never_read(capsys, tmp_path, good, monkeypatch):
    bad = tmp_path / "extra.npz"
    known = arrays_of(good / "names.npz")
    write_npz(bad, known, {"junk.npy": npy(np.zeros(10**6)), "notes.txt": b"hello"})
    reads = []
    real_read = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda f, **kw: reads.append(1) or real_read(f, **kw))
    ok_line(*run(capsys, "inspect", bad)[::2])
    assert len(reads) == len(known)  # junk.npy, an 8 MB array, was not among them


@pytest.mark.hostile(2)
def test_loading_more_than_memory_is_refused_with_the_estimate(capsys, good, monkeypatch):
    monkeypatch.setattr(limits, "available", lambda: 1000)
    line = error_line(*run(capsys, "sample", good / "names.npz")[::2])
    assert line.startswith(f"Error: loading {good / 'names.npz'} needs ~") and "0 MB available" in line


# ---------------------------------------------------------------- well-formed but hostile checkpoints (class 3)


def hostile(kind: str, src, dst) -> str:
    """Write a checkpoint that is a valid archive with hostile content; returns the expected reason."""
    a = arrays_of(src)
    if kind == "member-not-npy":
        write_npz(dst, {k: v for k, v in a.items() if k != "param.W_y"}, {"param.W_y.npy": b"hello, not an array"})
        return "the magic string is not correct"
    if kind == "nested-json":
        raw = a["meta"].tobytes()[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        write_npz(dst, dict(a, meta=np.frombuffer(raw, np.uint8)))
        return "values nested too deeply"
    if kind == "5000-digit-number":
        raw = a["meta"].tobytes()[:-1] + b', "x": ' + b"9" * 5000 + b"}"
        write_npz(dst, dict(a, meta=np.frombuffer(raw, np.uint8)))
        return "a number too long"
    if kind == "huge-hidden-size":
        write_npz(dst, a, meta=lambda m: m["model"].update(hidden_size=10**30))
        return "model.hidden_size is 1000000000000000000000000000000"
    if kind == "huge-step":
        write_npz(dst, a, meta=lambda m: m["progress"].update(step=2**70))
        return "progress.step is"
    if kind == "infinite-wall-time":
        write_npz(dst, a, meta=lambda m: m.update(wall_time=float("inf")))
        return "wall_time is inf"
    if kind == "nan-lr-scale":
        write_npz(dst, a, meta=lambda m: m["progress"].update(lr_scale=float("nan")))
        return "progress.lr_scale out of range"
    if kind == "huge-seq-len":  # sample's default length for a line model
        write_npz(dst, a, meta=lambda m: m["train"].update(seq_len=10**12))
        return "--seq-len must be at most 100,000"
    if kind == "optimizer-wrong-dtype":
        write_npz(dst, dict(a, **{"opt.m.W_y": a["opt.m.W_y"].astype(np.int64)}))
        return "optimizer array opt.m.W_y does not match the parameters"
    if kind == "optimizer-step-a-matrix":
        write_npz(dst, dict(a, **{"opt.t": np.zeros((3, 3))}))
        return "opt.t is not one integer"
    if kind == "optimizer-nan":
        v = a["opt.v.W_y"].copy()
        v[0, 0] = np.nan
        write_npz(dst, dict(a, **{"opt.v.W_y": v}))
        return "the optimizer state has NaN"
    if kind == "nan-evaluation-step":
        v = a["history.val"].copy()
        v[0, 0] = np.nan
        write_npz(dst, dict(a, **{"history.val": v}))
        return "evaluation steps out of range"
    if kind == "nan-loss":
        t = a["history.train"].copy()
        t[1] = np.nan
        write_npz(dst, dict(a, **{"history.train": t}))
        return "losses out of range"
    raise ValueError(kind)


HOSTILE = ["member-not-npy", "nested-json", "5000-digit-number", "huge-hidden-size", "huge-step", "infinite-wall-time",
           "nan-lr-scale", "huge-seq-len", "optimizer-wrong-dtype", "optimizer-step-a-matrix", "optimizer-nan",
           "nan-evaluation-step", "nan-loss"]


@pytest.mark.hostile(3)
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_checkpoint_content_is_one_error_line(capsys, tmp_path, good, kind):
    bad = tmp_path / "bad.npz"
    why = hostile(kind, good / "names.npz", bad)
    for args in (["inspect", bad], ["train", good / "names.txt", "--resume", bad, "--steps", "6", "--quiet"]):
        line = error_line(*run(capsys, *args)[::2])
        assert line.startswith(f"Error: {bad}: not a usable charrnn checkpoint (") and why in line, line


class Endless:
    """stdin that never ends and has no newline, like /dev/zero: reading all of it would never return."""

    def read(self, n=-1):
        assert n >= 0, "read to the end of an endless stdin"
        return "a" * n

    def readline(self, n=-1):
        assert n >= 0, "read a line of an endless stdin"
        return "a" * n


@pytest.mark.hostile(2)
def test_endless_stdin_is_read_only_as_far_as_needed(capsys, monkeypatch, good):
    monkeypatch.setattr("sys.stdin", Endless())
    code, out, err = run(capsys, "show", good / "prose.npz", "-", "--chars", "50", "--json")
    assert code == 0 and json.loads(out)["chars"] == 50, err
    line = error_line(*run(capsys, "fill", good / "names.npz")[::2])
    assert line == "Error: line 1 of the input is longer than 100,000 characters"
