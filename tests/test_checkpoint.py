"""charrnn.checkpoint: a saved model loads back to the same logits; damaged, foreign and
hostile files are refused in one line by every command and never unpickled; a failed save
never loses the checkpoint that was there."""

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TEN_NAMES_X3, TINY_H8_4STEPS, arrays_of, error_line, run, small_trainer

import charrnn
from charrnn import checkpoint, model
from charrnn.errors import CharrnnError

# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("mode", ["lines", "stream"])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, mode):
    tr = small_trainer(TEN_NAMES_X3, mode)
    tr.fit()
    path = tmp_path / "m.npz"
    checkpoint.save(path, tr.checkpoint())
    with np.load(path, allow_pickle=False) as z:  # plain data
        assert "meta" in z.files and all(z[k].dtype != object for k in z.files)
    ck = checkpoint.load(path)
    x = np.random.default_rng(0).integers(0, len(ck.vocab), (7, 3))
    a = model.forward(tr.params, tr.model_cfg, x).logits
    b = model.forward(ck.params, ck.cfg, x).logits
    assert np.array_equal(a, b)
    assert ck.vocab.chars == tr.corpus.vocab.chars
    assert ck.meta.progress.step == 20
    assert len(ck.train_losses) == 20 and ck.val_losses.shape == (2, 2)
    assert all(np.array_equal(ck.opt[k], tr.opt[k]) for k in tr.opt)


# ---------------------------------------------------------------- checkpoints are data, never code


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
        newest = checkpoint.FORMAT_VERSION
        return f"{WHY} (format version 99 is newer than this charrnn reads ({newest}): upgrade charrnn)"
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


def test_checkpoint_path_is_a_directory(tmp_path, capsys, good):
    for args in (["sample", tmp_path], ["inspect", tmp_path], ["eval", tmp_path, good / "names.txt"]):
        code, _, err = run(capsys, *args)
        assert error_line(code, err) == f"Error: {tmp_path}: is a directory, not a checkpoint"


# ---------------------------------------------------------------- saving never loses work


def test_refuses_to_overwrite_something_that_is_not_a_checkpoint(tmp_path, capsys, names_x3_file):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    code, _, err = run(capsys, "train", names_x3_file, "--out", precious, *TINY_H8_4STEPS)
    assert "refusing to overwrite" in error_line(code, err)
    assert precious.read_text() == "my notes"
    code, _, err = run(capsys, "train", names_x3_file, "--out", tmp_path / "no" / "such" / "m.npz", *TINY_H8_4STEPS)
    assert "no such folder" in error_line(code, err)


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
    assert checkpoint.load(ck).meta.progress.step == 4
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

    monkeypatch.setattr(checkpoint.os, "open", no_temp)  # creating the temporary file
    code, _, err = run(capsys, "train", names_x3_file, "--out", tmp_path / "m.npz", *TINY_H8_4STEPS)
    assert error_line(code, err).startswith(f"Error: {tmp_path / 'm.npz'}: cannot save the checkpoint")


@pytest.mark.hostile(5)
@pytest.mark.parametrize("sig,code,said", [(signal.SIGINT, 130, "Error: interrupted"),
                                           (signal.SIGTERM, 143, "Error: stopped by SIGTERM"),
                                           (signal.SIGHUP, 129, "Error: stopped by SIGHUP")])
@pytest.mark.parametrize("command", ["import", "export"])
def test_a_signal_during_a_save_leaves_no_temporary_file(tmp_path, capsys, monkeypatch, good, command, sig, code,
                                                         said):
    import safetensors.numpy

    exported = tmp_path / "n.safetensors"
    assert run(capsys, "export", good / "names.npz", exported)[0] == 0
    module, name = (checkpoint.np, "savez") if command == "import" else (safetensors.numpy, "save_file")
    real = getattr(module, name)

    def signalled(f, *args, **kw):
        real(f, *args, **kw)  # every byte written; the signal comes before the rename
        os.kill(os.getpid(), sig)

    monkeypatch.setattr(module, name, signalled)
    target = tmp_path / ("m.npz" if command == "import" else "m.safetensors")
    args = ["import", exported, "--out", target] if command == "import" else ["export", good / "names.npz", target]
    got, _, err = run(capsys, *args)
    assert got == code and error_line(1, err) == said, err
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["n.safetensors"]


@pytest.mark.hostile(5)
@pytest.mark.parametrize("at_save,said", [(1, "no checkpoint was written ({ck} does not exist)"),
                                          (2, "{ck} holds the evaluation at step 2")])
def test_ctrl_c_twice_during_a_save_says_what_the_checkpoint_holds(tmp_path, capsys, monkeypatch, names_x3_file,
                                                                    at_save, said):
    ck = tmp_path / "m.npz"
    real, saves = np.savez, []

    def second_ctrl_c(f, **arrays):
        saves.append(1)
        real(f, **arrays)
        if len(saves) == at_save:
            raise KeyboardInterrupt  # what the training's signal handler raises on a second Ctrl-C

    monkeypatch.setattr(checkpoint.np, "savez", second_ctrl_c)
    line = error_line(*run(capsys, "train", names_x3_file, "--out", ck, *TINY_H8_4STEPS)[::2])
    assert line == "Error: interrupted twice: stopped without saving; " + said.format(ck=ck)
    assert not list(tmp_path.glob(".m.npz.*")), "the temporary file was left behind"
    assert ck.exists() == (at_save == 2) and (at_save == 1 or checkpoint.load(ck).meta.progress.step == 2)


@pytest.mark.hostile(1)
def test_train_never_replaces_what_is_not_its_own_to_replace(tmp_path, capsys, names_x3_file):
    """--out (or the default target) is replaced only when it is a charrnn checkpoint the user may
    write, not the training text, and being resumed or --force is given; anything else is one
    Error line and the file is untouched."""
    ck = tmp_path / "m.npz"
    assert run(capsys, "train", names_x3_file, "--out", ck, *TINY_H8_4STEPS)[0] == 0
    before = ck.read_bytes()
    code, _, err = run(capsys, "train", names_x3_file, "--out", ck, *TINY_H8_4STEPS)
    line = error_line(code, err)
    assert "already holds a model (4 steps, best loss" in line and "--resume" in line and "--force" in line
    assert ck.read_bytes() == before
    assert run(capsys, "train", names_x3_file, "--resume", ck, "--steps", "6", "--quiet")[0] == 0  # resuming it: fine
    assert run(capsys, "train", names_x3_file, "--out", ck, "--force", *TINY_H8_4STEPS)[0] == 0
    assert checkpoint.load(ck).meta.progress.step == 4
    text_npz = tmp_path / "corpus.npz"  # a text file that happens to end in .npz, trained on and written to
    text_npz.write_text(names_x3_file.read_text())
    code, _, err = run(capsys, "train", text_npz, "--out", text_npz, "--force", *TINY_H8_4STEPS)
    assert "refusing to overwrite the training text" in error_line(code, err)
    assert text_npz.read_text() == names_x3_file.read_text()
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    code, _, err = run(capsys, "train", names_x3_file, "--out", other, "--force", *TINY_H8_4STEPS)
    assert "not a charrnn checkpoint" in error_line(code, err)
    assert np.load(other)["x"].tolist() == [0, 1, 2]
    locked = tmp_path / "locked.npz"
    locked.write_bytes(before)
    locked.chmod(0o444)  # read-only: kept even when running as root, who could write it
    code, _, err = run(capsys, "train", names_x3_file, "--out", locked, "--force", *TINY_H8_4STEPS)
    assert "write-protected" in error_line(code, err) and locked.read_bytes() == before


@pytest.mark.hostile(1)
def test_out_that_is_a_folder_says_so(tmp_path, capsys, names_x3_file):
    code, _, err = run(capsys, "train", names_x3_file, "--out", tmp_path, *TINY_H8_4STEPS)
    assert f"is a folder; give the checkpoint a file name, e.g. --out {tmp_path / 'names.npz'}" in error_line(code, err)


@pytest.mark.hostile(3)
@pytest.mark.parametrize("edit,says", [
    (lambda m: m.update(format_version=2), "format version 2 cannot hold the neighbors objective"),
    (lambda m: m.update(objective="masked"), "the objective is masked, the model's neighbors"),
])
def test_a_neighbors_checkpoint_must_say_so_consistently(tmp_path, edit, says):
    """A format-3 file relabelled as an older format, or whose metadata names another objective, is
    refused: an older charrnn would read it as a masked model."""
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.vocab import Vocab

    vocab = Vocab("abc")
    cfg = ModelConfig(len(vocab), "gru", 4, 2, bidirectional=True, objective="neighbors")
    params = model.init_params(cfg, np.random.default_rng(0))
    meta = checkpoint.Meta(objective=cfg.objective, mask_id=len(vocab), train=TrainConfig())
    checkpoint.save(tmp_path / "n.npz", checkpoint.Checkpoint(cfg, vocab, params, meta=meta))
    assert checkpoint.load(tmp_path / "n.npz").format_version == 3
    rewritten(tmp_path / "n.npz", tmp_path / "bad.npz", meta=edit)
    with pytest.raises(CharrnnError, match=says):
        checkpoint.load(tmp_path / "bad.npz")


@pytest.mark.hostile(3)
def test_a_checkpoint_with_a_head_must_say_format_4(tmp_path):
    """A file with a head relabelled as format 3 is refused: a charrnn before heads would not know the
    arrays between the states and the output."""
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.vocab import Vocab

    vocab = Vocab("abc")
    cfg = ModelConfig(len(vocab), "gru", 4, 1, bidirectional=True, objective="neighbors", head=5)
    params = model.init_params(cfg, np.random.default_rng(0))
    meta = checkpoint.Meta(objective=cfg.objective, mask_id=len(vocab), train=TrainConfig())
    checkpoint.save(tmp_path / "n.npz", checkpoint.Checkpoint(cfg, vocab, params, meta=meta))
    assert checkpoint.load(tmp_path / "n.npz").format_version == 4
    rewritten(tmp_path / "n.npz", tmp_path / "bad.npz", meta=lambda m: m.update(format_version=3))
    with pytest.raises(CharrnnError, match="format version 3 cannot hold a head"):
        checkpoint.load(tmp_path / "bad.npz")
    rewritten(tmp_path / "n.npz", tmp_path / "headless.npz", meta=lambda m: m["model"].pop("head"))
    with pytest.raises(CharrnnError, match="W_head"):  # arrays the config does not name
        checkpoint.load(tmp_path / "headless.npz")
