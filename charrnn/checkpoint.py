"""One self-contained `.npz` checkpoint: data only, loaded with allow_pickle=False.

Arrays (names as stored; see the README for shapes):
    meta                 uint8   UTF-8 JSON: format_version, model config, vocabulary, and `Meta` below
    param.<name>         float   current parameters (what training resumes from)
    best.<name>          float   parameters with the best validation loss (what sampling uses)
    opt.<slot>.<name>    float   optimizer state (m/v for Adam, G for Adagrad, v for SGD)
    opt.t                int64   optimizer step count
    state.<layer>.<k>    float   hidden state carried between stream chunks (k: 0 = h, 1 = c)
    history.train        float32 (steps,) training loss of every step, nats/char
    history.val          float64 (evals, 2) rows of (step, validation loss)
    line_hashes          uint64  sorted 64-bit hashes of every line of the text, validation too (novelty)

The metadata's schema is the `Meta` dataclass tree: `save` writes it and `load` reads it back
through `parse_meta`, which checks every known key's type; unknown keys are ignored (a newer
charrnn's additions), keys an older file lacks take their defaults.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import types
import typing
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, cast

import numpy as np

from charrnn import limits
from charrnn.config import Mode, ModelConfig, Objective, TrainConfig
from charrnn.errors import CharrnnError
from charrnn.model import Params, State, layer_specs, param_shapes
from charrnn.vocab import Vocab

# 2: bidirectional models; 3: the neighbors objective; 4: a head joining the two directions. Each file
# says the oldest version that reads it: forward models are still written as 1, masked ones as 2.
FORMAT_VERSION = 4
MAX_LOSS = -math.log(np.finfo(np.float64).tiny)  # 708.4 nats: no cross-entropy charrnn computes is larger


@dataclass
class CorpusInfo:
    """The text a model was trained on, as it was read."""

    chars: int = 0  # characters in the text
    unk_chars: int = 0  # of them, how many became <UNK>
    train_chars: int = 0  # ids in the training split
    val_chars: int = 0  # ids in the validation split
    fingerprint: int | None = None  # CRC-32 of the training ids: tells a changed text on resume


@dataclass
class Progress:
    """Where training stands: everything besides the arrays that an exact resume needs."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs done
    pos: int = 0  # the next batch within the epoch
    rng: dict[str, Any] | None = None  # state of the dropout generator (numpy PCG64)
    evals_since_best: int = 0  # scheduled evaluations since validation last improved (--patience)
    lr_scale: float = 1.0  # what --lr-plateau has multiplied the learning rate by so far
    epochs_done: float = 0.0  # epoch + pos / batches per epoch
    # best scheduled validation loss (drives --lr-plateau, --patience); None: none yet; NaN: a file
    # older than this field, whose best_val_loss stands in for it
    plateau_best: float | None = math.nan


@dataclass
class Meta:
    """A checkpoint's metadata besides the model config and the vocabulary."""

    mode: Mode = Mode.STREAM  # how the text was cut into examples
    objective: Objective = Objective.NEXT  # what the model predicts
    mask_id: int | None = None  # masked objective: the input id that hides a character (V, one past the vocabulary)
    source: str = ""  # file name of the training text
    best_val_loss: float | None = None  # nats/char of the best weights (training loss without a val split)
    wall_time: float = 0.0  # seconds spent training, evaluations excluded
    chars_seen: int = 0  # characters trained on
    stop_reason: str = ""  # why the last run stopped
    backend: str = ""  # what the last run's cells ran on (numpy, or numba's compiled cells); "" before it was kept
    corpus: CorpusInfo = field(default_factory=CorpusInfo)
    progress: Progress = field(default_factory=Progress)
    train: TrainConfig = field(default_factory=TrainConfig)


class MetaError(ValueError):
    pass


def parse(cls: Any, d: Any, where: str = "", strict: bool = False) -> Any:
    """An instance of dataclass `cls` from JSON data, checking the type of every field given.
    Unknown keys are ignored, or refused when `strict`; missing ones take their defaults."""
    if not isinstance(d, dict):
        raise MetaError(f"{where.rstrip('.') or 'metadata'} is not a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    if strict and set(d) - known:
        raise MetaError(f"unknown {where}{sorted(set(d) - known)[0]}")
    values = {name: _value(hints[name], d[name], where + name) for name in known if name in d}
    try:
        return cls(**values)
    except TypeError as e:  # a required field is missing
        raise MetaError(f"{where.rstrip('.')}: {e}") from None


def _value(t: Any, v: Any, name: str) -> Any:
    if is_dataclass(t):
        return parse(t, v, name + ".")
    args = typing.get_args(t)
    if isinstance(t, types.UnionType):  # X | None
        return None if v is None else _value(next(a for a in args if a is not type(None)), v, name)
    if isinstance(t, type) and issubclass(t, Enum):
        try:
            return t(v)
        except ValueError:
            raise MetaError(f"unknown {name} {v!r}") from None
    base = typing.get_origin(t) or t
    if isinstance(v, bool) and base is not bool:  # JSON true is not the number 1
        raise MetaError(f"{name} has the wrong type")
    if base is float and isinstance(v, int):
        return float(v)
    if not isinstance(v, base):
        raise MetaError(f"{name} has the wrong type")
    if base is int and not 0 <= v < 2**63:  # every count fits an int64
        raise MetaError(f"{name} is {v}")
    if base is float and math.isinf(v):  # NaN is a value some fields give meaning to: see meta_problem
        raise MetaError(f"{name} is {v}")
    return v


def meta_problem(meta: Meta) -> str:
    """What is wrong with metadata of the right types, or ''."""
    try:
        np.random.default_rng().bit_generator.state = meta.progress.rng or np.random.PCG64().state
    except (TypeError, ValueError, KeyError, OverflowError):
        return "progress.rng is not a random generator state"
    p = meta.progress
    if not (meta.wall_time >= 0 and p.epochs_done >= 0 and p.lr_scale > 0):  # NaN fails each
        return "wall_time, progress.epochs_done or progress.lr_scale out of range"
    return ""


@dataclass
class Checkpoint:
    # the arrays stay out of repr: a checkpoint at a Python prompt is a few lines, not every weight
    cfg: ModelConfig
    vocab: Vocab = field(repr=False)
    params: Params = field(repr=False)
    best: Params | None = field(default=None, repr=False)
    opt: Params = field(default_factory=dict, repr=False)
    state: State | None = field(default=None, repr=False)
    meta: Meta = field(default_factory=Meta, repr=False)
    train_losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    val_losses: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False)
    line_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64), repr=False)
    format_version: int = 1  # of the file it was loaded from

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


def written_as(cfg: ModelConfig) -> int:
    """The format version a model's file says: the oldest that reads it."""
    if cfg.head:
        return 4
    return {Objective.NEXT: 1, Objective.MASKED: 2, Objective.NEIGHBORS: 3}[cfg.objective]


def save(path: str | os.PathLike, ck: Checkpoint) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over `path`."""
    version = written_as(ck.cfg)
    meta = dict(asdict(ck.meta), format_version=version, model=ck.cfg.to_dict(), vocab=ck.vocab.chars)
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, ensure_ascii=True).encode("ascii"), dtype=np.uint8)
    }
    arrays.update({f"param.{k}": v for k, v in ck.params.items()})
    if ck.best is not None:
        arrays.update({f"best.{k}": v for k, v in ck.best.items()})
    arrays.update({f"opt.{k}": v for k, v in ck.opt.items()})
    for l, layer_state in enumerate(ck.state or []):
        arrays.update({f"state.{l}.{k}": s for k, s in enumerate(layer_state)})
    arrays["history.train"] = np.asarray(ck.train_losses, np.float32)
    arrays["history.val"] = np.asarray(ck.val_losses, np.float64).reshape(-1, 2)
    arrays["line_hashes"] = np.asarray(ck.line_hashes, np.uint64)

    path = Path(path)
    try:
        with atomic(path) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            np.savez(f, **cast(dict[str, Any], arrays))  # numpy's stubs take ** for its allow_pickle flag
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # disk full, permissions: the previous file is still whole
        raise CharrnnError(f"{path}: cannot save the checkpoint ({e.strerror or e}); "
                           "the previous one, if any, is unchanged") from None


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """A new temporary path beside `path` to write; when the block ends, the file there gets the mode
    `path` has or the umask gives and is renamed over `path` at once. On any exception in the block
    (a full disk, Ctrl-C, a signal the CLI raises as an exception) it is removed: nothing is left."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"  # named before it exists: no window
    try:
        yield tmp
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_mode(path: Path) -> int:
    """The mode a new file gets from the user's umask, or the mode of the file it replaces."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _bad(path: Path, why: str) -> CharrnnError:
    return CharrnnError(f"{path}: not a usable charrnn checkpoint ({why})")


MAX_META = 16 << 20  # bytes of metadata JSON read at most: a 65,536-character vocabulary takes under 1 MB
KNOWN = {"meta", "history.train", "history.val", "line_hashes"}  # the members the format defines, and
KNOWN_GROUPS = ("param.", "best.", "opt.", "state.")  # the groups of its other members


@dataclass
class Member:
    """An archive member as its .npy header declares it, before its data is read."""

    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _members(zf: zipfile.ZipFile) -> dict[str, Member]:
    """The members the format defines (others are never read), each checked to be an .npy array of
    plain data exactly as long as its header says: a header cannot claim less than it inflates to."""
    found = {}
    for info in zf.infolist():
        name = info.filename.removesuffix(".npy")
        if name == info.filename or not (name in KNOWN or name.startswith(KNOWN_GROUPS)):
            continue
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)  # ValueError if this is no .npy
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{info.filename}: .npy format version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            m = Member(info, dtype, shape)
            if dtype.hasobject:
                raise ValueError("pickle")  # Python objects: refused, never loaded
            if info.file_size != f.tell() + m.nbytes:
                raise ValueError(f"{info.filename} is not as long as its header says")
        found[name] = m
    return found


def _read(zf: zipfile.ZipFile, m: Member) -> np.ndarray:
    with zf.open(m.info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def declared_problem(name: str, m: Member, cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], meta: Meta) -> str:
    """What is wrong with a member's declared dtype and shape for this config (whose parameter shapes
    are `shapes`) and metadata, or ''. Checked before any data is read, so that no array is larger
    than the config makes it."""
    group, _, key = name.partition(".")
    dtype = np.dtype(cfg.dtype)
    if group in ("param", "best"):
        want = shapes.get(key)
        if want is None:
            return f"{name} is not a parameter of the config {sorted(shapes)}"
        if m.shape != want or m.dtype != dtype:
            return f"{name} is {m.dtype}{list(m.shape)}, config says {cfg.dtype}{list(want)}"
    elif name == "opt.t":
        if m.shape != () or m.dtype.kind not in "iu":
            return "the optimizer step count opt.t is not one integer"
    elif group == "opt":
        if m.shape != shapes.get(key.partition(".")[2]) or m.dtype != dtype:
            return f"optimizer array {name} does not match the parameters"
    elif group == "state":
        if len(m.shape) != 2 or m.shape[1] != cfg.hidden_size or m.shape[0] > meta.train.batch_size \
                or m.dtype != dtype:
            return "hidden state does not match the config"
    elif name == "history.train":
        if len(m.shape) != 1 or m.shape[0] > meta.progress.step or m.dtype.kind != "f":
            return "damaged training history (more losses than steps)"
    elif name == "history.val":
        if len(m.shape) != 2 or m.shape[1] != 2 or m.shape[0] > meta.progress.step + 1 or m.dtype.kind != "f":
            return "damaged training history (more evaluations than steps)"
    elif name == "line_hashes":
        if len(m.shape) != 1 or m.shape[0] > meta.corpus.chars + 1 or m.dtype != np.uint64:
            return "damaged line hashes (more lines than characters)"
    return ""


def parse_header(path: Path, raw: bytes) -> tuple[int, ModelConfig, Vocab, Meta]:
    """The format version, model config, vocabulary and metadata from the metadata's JSON bytes."""
    try:
        meta = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"damaged metadata: {e}") from None
    except (ValueError, RecursionError):  # a number of over 4,300 digits; arrays nested 1,000 deep
        raise _bad(path, "damaged metadata: a number too long or values nested too deeply") from None
    if not isinstance(meta, dict):
        raise _bad(path, "damaged metadata")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise _bad(path, "no format version")
    if version > FORMAT_VERSION:
        raise _bad(path, f"format version {version} is newer than this charrnn reads ({FORMAT_VERSION}): "
                         "upgrade charrnn")
    try:
        vocab = Vocab(str(meta.pop("vocab")))
        if any(0xD800 <= ord(c) <= 0xDFFF for c in vocab.chars):
            raise CharrnnError("unpaired surrogates in the vocabulary")
        cfg = parse(ModelConfig, meta.pop("model"), "model.", strict=True)
    except (KeyError, CharrnnError, MetaError) as e:
        raise _bad(path, f"bad model config or vocabulary: {e}") from None
    try:
        info = parse(Meta, meta)
    except (MetaError, CharrnnError) as e:  # CharrnnError: a train config no option could give
        raise _bad(path, f"damaged metadata: {e}") from None
    problem = meta_problem(info) or (
        f"the objective is {info.objective}, the model's {cfg.objective}" if info.objective != cfg.objective else
        f"format version {version} cannot hold {'a head' if cfg.head else f'the {cfg.objective} objective'}"
        if version < written_as(cfg) else "")
    if problem:
        raise _bad(path, f"damaged metadata: {problem}")
    return version, cfg, vocab, info


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; any problem is one CharrnnError naming it. Only the members
    the format defines are read, each after its declared dtype and shape agree with the config."""
    path = Path(path)
    limits.regular_file(path, "checkpoint")  # a FIFO would block, /dev/zero never end
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            f.seek(0)
            if not head.startswith(b"PK"):  # numpy would try anything but .npz and .npy as a pickle
                raise ValueError("the file is empty" if not head else "pickle" if head[:1] == b"\x80"
                                 else "not an .npz archive" if head == b"\x93NUMPY" else "not an .npz file")
            with zipfile.ZipFile(f) as zf:
                members = _members(zf)
                m = members.get("meta")
                if m is None or m.dtype != np.uint8 or len(m.shape) != 1:
                    raise _bad(path, "no metadata: was it written by another program?")
                if m.nbytes > MAX_META:
                    raise _bad(path, f"{m.nbytes:,} bytes of metadata (at most {MAX_META:,} are read)")
                version, cfg, vocab, info = parse_header(path, _read(zf, m).tobytes())
                if cfg.layers > len(members):  # before building specs for layers the file cannot hold
                    raise _bad(path, f"the config has {cfg.layers} layers but the file has only "
                                     f"{len(members)} arrays")
                del members["meta"]
                stack = layer_specs(cfg)
                shapes = param_shapes(cfg, stack)
                problem = next(filter(None, (declared_problem(k, a, cfg, shapes, info) for k, a in members.items())),
                               "")
                if problem:
                    raise _bad(path, problem)
                limits.require(sum(a.nbytes for a in members.values()), f"loading {path}")
                arrays = {k: _read(zf, a) for k, a in members.items()}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError) as e:
        why = "it holds Python objects, which are never loaded" if "pickle" in str(e) else str(e) or type(e).__name__
        raise _bad(path, why) from None
    if cfg.vocab_size != len(vocab):
        raise _bad(path, f"vocabulary has {len(vocab)} entries but the model expects {cfg.vocab_size}")

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    # every array's dtype and shape are checked already (declared_problem), against these `shapes`
    params, best = group("param."), group("best.") or None
    for name, ps in (("param", params), ("best", best)):
        if ps is None:
            continue
        if set(ps) != set(shapes):
            raise _bad(path, f"{name} arrays {sorted(ps)} do not match the config {sorted(shapes)}")
        for k, v in ps.items():
            if not np.all(np.isfinite(v)):
                raise _bad(path, f"{name}.{k} has NaN or infinite values")
    opt = group("opt.")
    if any(not np.all(np.isfinite(v)) for v in opt.values()) or opt.get("t", 0) < 0:
        raise _bad(path, "the optimizer state has NaN, infinite or negative values")
    state = None
    st = group("state.")
    if st:
        try:
            state = [tuple(st[f"{layer.index}.{k}"] for k in range(layer.state_size)) for layer in stack]
        except KeyError as e:
            raise _bad(path, f"missing hidden state {e}") from None
        if len({s.shape for layer in state for s in layer}) != 1 or not all(np.isfinite(s).all() for s in st.values()):
            raise _bad(path, "hidden state does not match the config or is not finite")
    train_losses = arrays.get("history.train", np.zeros(0, np.float32))
    val_losses = arrays.get("history.val", np.zeros((0, 2)))
    hashes = arrays.get("line_hashes", np.zeros(0, np.uint64))
    losses = np.r_[train_losses.astype(np.float64), val_losses[:, 1], info.best_val_loss or 0.0]
    if not np.all((losses >= 0) & (losses <= MAX_LOSS)):
        raise _bad(path, "damaged training history (losses out of range)")
    steps = val_losses[:, 0]
    if not np.all((steps >= 0) & (steps <= info.progress.step) & (steps == np.round(steps))):  # NaN fails too
        raise _bad(path, "damaged training history (evaluation steps out of range)")
    return Checkpoint(cfg, vocab, params, best, opt, state, info, train_losses, val_losses, hashes, version)
