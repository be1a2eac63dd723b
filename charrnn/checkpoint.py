"""One self-contained `.npz` checkpoint: data only, loaded with allow_pickle=False.

Arrays (names as stored; see the README for shapes):
    meta                 uint8   UTF-8 JSON: format_version, model and train config, vocabulary,
                                 progress (step, epoch, position, RNG state), figures, source
    param.<name>         float   current parameters (what training resumes from)
    best.<name>          float   parameters with the best validation loss (what sampling uses)
    opt.<slot>.<name>    float   optimizer state (m/v for Adam, G for Adagrad, v for SGD)
    opt.t                int64   optimizer step count
    state.<layer>.<k>    float   hidden state carried between stream chunks (k: 0 = h, 1 = c)
    history.train        float32 (steps,) training loss of every step, nats/char
    history.val          float64 (evals, 2) rows of (step, validation loss)
    line_hashes          uint64  sorted 64-bit hashes of every line of the text, validation too (novelty)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.model import ModelConfig, Params, State, param_shapes, zero_state
from charrnn.vocab import Vocab

FORMAT_VERSION = 1
NUM = (int, float)
MAX_LOSS = -math.log(np.finfo(np.float64).tiny)  # 708.4 nats: no cross-entropy charrnn computes is larger
# the metadata the commands read, with the JSON types they expect (other keys are ignored)
META_TYPES: dict[str, Any] = {
    "mode": str, "source": str, "best_val_loss": (*NUM, type(None)), "wall_time": NUM, "chars_seen": int,
    "stop_reason": str,
    "corpus": {"chars": int, "unk_chars": int, "train_chars": int, "val_chars": int, "fingerprint": int},
    "progress": {"step": int, "epoch": int, "pos": int, "rng": dict, "evals_since_best": int, "lr_scale": NUM,
                 "epochs_done": NUM, "plateau_best": (*NUM, type(None))},
    "train": {"mode": str, "seq_len": int, "batch_size": int, "val_fraction": NUM, "min_count": int,
              "max_vocab": int, "optimizer": str, "lr": NUM, "lr_decay": NUM, "lr_plateau": NUM, "clip": NUM,
              "clip_mode": str, "steps": int, "epochs": NUM, "time_minutes": NUM, "eval_every": int,
              "patience": int, "seed": int, "val_max_chars": int},
}


@dataclass
class Checkpoint:
    cfg: ModelConfig
    vocab: Vocab
    params: Params
    best: Params | None = None
    opt: Params = field(default_factory=dict)
    state: State | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # train config, progress, figures
    train_losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    val_losses: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    line_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    @property
    def sampling_params(self) -> Params:
        return self.best if self.best is not None else self.params


def hash_each(lines: list[str]) -> np.ndarray:
    """A 64-bit BLAKE2b hash of every line, in order: (len(lines),) uint64."""
    h = [int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
         for s in lines]
    return np.array(h, dtype=np.uint64)


def line_hashes(lines: list[str]) -> np.ndarray:
    """Sorted unique hashes of `lines`: what a checkpoint keeps to tell novel samples."""
    return np.unique(hash_each(lines))


def save(path: str | os.PathLike, ck: Checkpoint) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over `path`."""
    meta = dict(ck.meta, format_version=FORMAT_VERSION, model=ck.cfg.to_dict(), vocab=ck.vocab.chars)
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, ensure_ascii=True).encode("ascii"), dtype=np.uint8)
    }
    arrays.update({f"param.{k}": v for k, v in ck.params.items()})
    if ck.best is not None:
        arrays.update({f"best.{k}": v for k, v in ck.best.items()})
    arrays.update({f"opt.{k}": v for k, v in ck.opt.items()})
    for l, layer in enumerate(ck.state or []):
        arrays.update({f"state.{l}.{k}": s for k, s in enumerate(layer)})
    arrays["history.train"] = np.asarray(ck.train_losses, np.float32)
    arrays["history.val"] = np.asarray(ck.val_losses, np.float64).reshape(-1, 2)
    arrays["line_hashes"] = np.asarray(ck.line_hashes, np.uint64)

    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # disk full, permissions: the previous file is still whole
            raise CharrnnError(f"{path}: cannot save the checkpoint ({e.strerror or e}); "
                               "the previous one, if any, is unchanged") from None
        raise


def _bad(path: Path, why: str) -> CharrnnError:
    return CharrnnError(f"{path}: not a usable charrnn checkpoint ({why})")


def _meta_problem(meta: dict[str, Any], types: dict[str, Any] = META_TYPES, where: str = "") -> str:
    """What is wrong with the metadata's known keys, or ''."""
    for key, t in types.items():
        if key not in meta:
            continue
        v = meta[key]
        if isinstance(t, dict):
            problem = _meta_problem(v, t, f"{where}{key}.") if isinstance(v, dict) else f"{where}{key} is not a table"
        elif not isinstance(v, t) or (isinstance(v, bool) and t is not bool):
            problem = f"{where}{key} has the wrong type"
        elif isinstance(v, int) and v < (1 if key in ("seq_len", "batch_size", "eval_every") else 0):
            problem = f"{where}{key} is {v}"
        else:
            continue
        if problem:
            return problem
    if not where:  # the top level
        if meta.get("mode", "stream") not in ("lines", "stream"):
            return f"unknown mode {meta['mode']!r}"
        try:
            np.random.default_rng().bit_generator.state = meta.get("progress", {}).get("rng", np.random.PCG64().state)
        except (TypeError, ValueError, KeyError, OverflowError):
            return "progress.rng is not a random generator state"
    return ""


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; any problem is one CharrnnError naming it."""
    path = Path(path)
    if not path.exists():
        raise CharrnnError(f"{path}: no such file")
    if path.is_dir():
        raise CharrnnError(f"{path}: is a directory, not a checkpoint")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            f.seek(0)
            if not head.startswith((b"PK", b"\x93NUMPY")):  # numpy would try anything else as a pickle
                raise ValueError("the file is empty" if not head else "pickle" if head[:1] == b"\x80"
                                 else "not an .npz file")
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):  # a lone .npy array
                raise ValueError("not an .npz archive")
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError) as e:
        why = "it holds Python objects, which are never loaded" if "pickle" in str(e) else str(e) or type(e).__name__
        raise _bad(path, why) from None
    if "meta" not in arrays or arrays["meta"].dtype != np.uint8:
        raise _bad(path, "no metadata: was it written by another program?")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"damaged metadata: {e}") from None
    if not isinstance(meta, dict):
        raise _bad(path, "damaged metadata")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise _bad(path, "no format version")
    if version > FORMAT_VERSION:
        raise _bad(path, f"format version {version} is newer than this charrnn reads ({FORMAT_VERSION}): upgrade charrnn")
    try:
        vocab = Vocab(str(meta.pop("vocab")))
        if any(0xD800 <= ord(c) <= 0xDFFF for c in vocab.chars):
            raise CharrnnError("unpaired surrogates in the vocabulary")
        cfg = ModelConfig(**meta.pop("model"))
    except (KeyError, TypeError, CharrnnError) as e:
        raise _bad(path, f"bad model config or vocabulary: {e}") from None
    problem = _meta_problem(meta)
    if problem:
        raise _bad(path, f"damaged metadata: {problem}")
    if not all(type(getattr(cfg, k)) is int for k in ("vocab_size", "hidden_size", "layers")):
        raise _bad(path, "sizes in the model config are not whole numbers")
    if 3 * cfg.layers + 2 > len(arrays):  # before building shapes for layers the file cannot hold
        raise _bad(path, f"the config has {cfg.layers} layers but the file has only {len(arrays)} arrays")
    if cfg.vocab_size != len(vocab):
        raise _bad(path, f"vocabulary has {len(vocab)} entries but the model expects {cfg.vocab_size}")

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    shapes = param_shapes(cfg)
    params, best = group("param."), group("best.") or None
    for name, ps in (("param", params), ("best", best)):
        if ps is None:
            continue
        if set(ps) != set(shapes):
            raise _bad(path, f"{name} arrays {sorted(ps)} do not match the config {sorted(shapes)}")
        for k, v in ps.items():
            if v.shape != shapes[k] or v.dtype != np.dtype(cfg.dtype):
                raise _bad(path, f"{name}.{k} is {v.dtype}{list(v.shape)}, config says {cfg.dtype}{list(shapes[k])}")
            if not np.all(np.isfinite(v)):
                raise _bad(path, f"{name}.{k} has NaN or infinite values")
    opt = group("opt.")
    for k, v in opt.items():
        base = k.split(".", 1)[-1]
        if k != "t" and (base not in shapes or v.shape != shapes[base]):
            raise _bad(path, f"optimizer array opt.{k} does not match the parameters")
    state = None
    st = group("state.")
    if st:
        template = zero_state(cfg, 1)
        try:
            state = [tuple(st[f"{l}.{k}"] for k in range(len(template[l]))) for l in range(cfg.layers)]
        except KeyError as e:
            raise _bad(path, f"missing hidden state {e}") from None
        if any(s.ndim != 2 or s.shape[1] != cfg.hidden_size for layer in state for s in layer):
            raise _bad(path, "hidden state does not match the config")
    train_losses = arrays.get("history.train", np.zeros(0, np.float32))
    val_losses = arrays.get("history.val", np.zeros((0, 2)))
    hashes = arrays.get("line_hashes", np.zeros(0, np.uint64))
    if train_losses.ndim != 1 or val_losses.ndim != 2 or val_losses.shape[1] != 2 or hashes.ndim != 1 \
            or hashes.dtype != np.uint64 or not all(a.dtype.kind == "f" for a in (train_losses, val_losses)):
        raise _bad(path, "damaged training history")
    losses = np.r_[train_losses.astype(np.float64), val_losses[:, 1], meta.get("best_val_loss") or 0.0]
    if not np.all((losses >= 0) & (losses <= MAX_LOSS)):
        raise _bad(path, "damaged training history (losses out of range)")
    return Checkpoint(cfg, vocab, params, best, opt, state, meta, train_losses, val_losses, hashes)
