"""Weights in and out as PyTorch names them: `nn.LSTM`/`nn.GRU`/`nn.RNN` plus an `nn.Linear`, in a
safetensors file whose string metadata holds the vocabulary and the config ("charrnn-torch" format 1).

Per recurrent layer k (suffix `_reverse` for a right-to-left layer), G = gates * H:
    weight_ih_l{k}  (G, n_in)  = W_x{k}.T with the gate blocks in PyTorch's order (layer 0: n_in = V, one-hot)
    weight_hh_l{k}  (G, H)     = W_h{k}.T, same order
    bias_ih_l{k}    (G,)       = b{k}
    bias_hh_l{k}    (G,)       = 0
and on top
    out.weight      (V, H)     = W_y.T
    out.bias        (V,)       = b_y
with a head (bidirectional models; format 2), between the recurrent layers and 'out':
    head.weight     (n_z, 2H)  = W_head.T   (an nn.Linear followed by tanh; 'out' then reads n_z)
    head.bias       (n_z,)     = b_head

PyTorch orders LSTM gates [i, f, g, o] where charrnn has [i, f, o, g]; both order GRU gates
[r, u (PyTorch's z), n] and apply the reset gate after the recurrent product. PyTorch has two
biases where charrnn has one: on the way in they are added, except the GRU's recurrent n bias,
which sits inside r * (h W_hn + b_hn) and has no charrnn counterpart; a non-zero one is refused.

The conversions are pure functions; only `read_file` and `write_file` touch safetensors.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn import cells, limits
from charrnn.checkpoint import atomic
from charrnn.config import ACTIVATIONS, CELLS, DTYPES, MAX_SEQ_LEN, Mode, ModelConfig, Objective
from charrnn.errors import CharrnnError
from charrnn.model import Layer, Params, input_size, layer_specs, output_width
from charrnn.vocab import EOS, SPECIALS, UNK, Vocab

FORMAT = "charrnn-torch"
FORMAT_VERSION = 2  # 2: a head; files without one are still written as 1
# PyTorch's gate blocks by charrnn's gate names (its GRU calls u "z"; the RNN's one block is h)
TORCH_GATE_ORDER: dict[str, tuple[str, ...]] = {"rnn": ("h",), "gru": ("r", "u", "n"), "lstm": ("i", "f", "g", "o")}
MAX_HEADER = 100 << 20  # bytes of JSON header read before any check: far more than any charrnn export needs
SAFETENSORS_DTYPES = {"float32": "F32", "float64": "F64"}


class InteropError(CharrnnError):
    pass


def torch_columns(cell: str, hidden: int) -> np.ndarray:
    """(G,) indices: charrnn's gate columns taken in PyTorch's order, so W[:, cols] is PyTorch's layout."""
    blocks = [cells.gate_index(cell, name) for name in TORCH_GATE_ORDER[cell]]
    return np.concatenate([np.arange(j * hidden, (j + 1) * hidden) for j in blocks])


def check_layout(cfg: ModelConfig) -> None:
    """Refuse a model PyTorch's layout cannot hold: a neighbors model of several layers, whose two
    directions are separate stacks (nn.LSTM(bidirectional=True) feeds each layer both)."""
    if cfg.objective == Objective.NEIGHBORS and cfg.layers > 1:
        raise InteropError(f"a {cfg.layers}-layer neighbors model keeps its two directions in separate stacks, "
                           "which nn.LSTM(bidirectional=True) cannot hold; export and import support 1 layer")


def layer_names(layer: Layer) -> dict[str, str]:
    """PyTorch's parameter names for one layer, by role."""
    suffix = f"l{layer.index}" + ("_reverse" if layer.reverse else "")
    return {role: f"{role}_{suffix}" for role in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def torch_shapes(cfg: ModelConfig, stack: list[Layer] | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor of the export, by name, with its shape."""
    stack = stack if stack is not None else layer_specs(cfg)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in stack:
        G, n = layer_names(layer), layer.gates * layer.hidden
        shapes.update({G["weight_ih"]: (n, layer.n_in), G["weight_hh"]: (n, layer.hidden),
                       G["bias_ih"]: (n,), G["bias_hh"]: (n,)})
    if cfg.head:
        shapes["head.weight"] = (cfg.head, output_width(stack))
        shapes["head.bias"] = (cfg.head,)
    shapes["out.weight"] = (cfg.vocab_size, cfg.head or output_width(stack))
    shapes["out.bias"] = (cfg.vocab_size,)
    return shapes


def to_torch(params: Params, cfg: ModelConfig, stack: list[Layer] | None = None) -> dict[str, np.ndarray]:
    """charrnn parameters -> PyTorch's tensors (contiguous, in the config's dtype)."""
    stack = stack if stack is not None else layer_specs(cfg)
    t: dict[str, np.ndarray] = {}
    for layer in stack:
        W_x, W_h, b = layer.names()
        names, cols = layer_names(layer), torch_columns(layer.cell, layer.hidden)
        t[names["weight_ih"]] = params[W_x][:, cols].T  # (G, n_in)
        t[names["weight_hh"]] = params[W_h][:, cols].T  # (G, H)
        t[names["bias_ih"]] = params[b][cols]  # (G,)
        t[names["bias_hh"]] = np.zeros_like(params[b])  # (G,)
    if cfg.head:
        t["head.weight"] = params["W_head"].T  # (n_z, 2H)
        t["head.bias"] = params["b_head"]  # (n_z,)
    t["out.weight"] = params["W_y"].T  # (V, H), or (V, 2H) after a bidirectional level, or (V, n_z)
    t["out.bias"] = params["b_y"]  # (V,)
    return {k: np.ascontiguousarray(v, dtype=cfg.dtype) for k, v in t.items()}


def from_torch(tensors: dict[str, np.ndarray], cfg: ModelConfig, stack: list[Layer] | None = None) -> Params:
    """PyTorch's tensors -> charrnn parameters; the two biases are added. Shapes must be checked
    first (`check_tensors`); a GRU's non-zero recurrent n bias is refused."""
    stack = stack if stack is not None else layer_specs(cfg)
    p: Params = {}
    for layer in stack:
        W_x, W_h, b = layer.names()
        names = layer_names(layer)
        back = np.argsort(torch_columns(layer.cell, layer.hidden))  # PyTorch's order -> charrnn's
        b_hh = tensors[names["bias_hh"]][back]  # (G,)
        if layer.cell == "gru":
            b_hn = cells.split_gates(b_hh, "gru")[cells.gate_index("gru", "n")]
            if np.any(b_hn != 0):
                raise InteropError(f"{names['bias_hh']}: the GRU's recurrent bias of n is not zero "
                                   f"(largest {np.abs(b_hn).max():.3g}); charrnn's GRU has no such bias, so "
                                   "these weights cannot be represented exactly (train with bias_hh frozen at 0)")
        p[W_x] = tensors[names["weight_ih"]].T[:, back]  # (n_in, G)
        p[W_h] = tensors[names["weight_hh"]].T[:, back]  # (H, G)
        p[b] = tensors[names["bias_ih"]][back] + b_hh  # (G,)
    if cfg.head:
        p["W_head"] = tensors["head.weight"].T  # (2H, n_z)
        p["b_head"] = tensors["head.bias"]  # (n_z,)
    p["W_y"] = tensors["out.weight"].T  # (H, V)
    p["b_y"] = tensors["out.bias"]  # (V,)
    return {k: np.ascontiguousarray(v, dtype=cfg.dtype) for k, v in p.items()}


# ---------------------------------------------------------------- metadata


@dataclass
class Export:
    """What a charrnn-torch file holds, as charrnn uses it."""

    cfg: ModelConfig
    vocab: Vocab
    mode: Mode
    objective: Objective
    source: str  # file name of the training text
    seq_len: int  # training line limit (lines) or chunk length (stream): sampling's default length


def metadata(e: Export) -> dict[str, str]:
    """The file's string metadata: JSON values a PyTorch program can read without charrnn."""
    cfg = e.cfg
    return {
        "format": FORMAT,
        "format_version": str(2 if cfg.head else 1),
        "vocab": json.dumps({"chars": e.vocab.chars, "specials": {SPECIALS[UNK]: UNK, SPECIALS[EOS]: EOS},
                             "first_char_id": len(SPECIALS)}),
        "model": json.dumps({"cell": cfg.cell, "input_size": input_size(cfg), "hidden_size": cfg.hidden_size,
                             "num_layers": cfg.layers, "nonlinearity": cfg.activation, "dtype": cfg.dtype,
                             "bidirectional": cfg.bidirectional, "output_size": cfg.vocab_size, "input": "one-hot",
                             "batch_first": False, "mask_id": input_size(cfg) - 1 if cfg.bidirectional else None,
                             **({"head_size": cfg.head} if cfg.head else {})}),
        "data": json.dumps({"mode": e.mode.value, "objective": e.objective.value, "source": e.source,
                            "seq_len": e.seq_len}),
    }


def _json_table(meta: dict[str, Any], key: str) -> dict[str, Any]:
    try:
        d = json.loads(meta[key])
    except KeyError:
        raise InteropError(f"no {key!r} in the metadata") from None
    except (TypeError, json.JSONDecodeError) as e:
        raise InteropError(f"the metadata's {key!r} is not JSON ({e})") from None
    if not isinstance(d, dict):
        raise InteropError(f"the metadata's {key!r} is not a table")
    return d


def _field(d: dict[str, Any], key: str, kind: type, where: str) -> Any:
    v = d.get(key)
    if not isinstance(v, kind) or isinstance(v, bool):
        raise InteropError(f"the metadata's {where}.{key} is missing or not a {kind.__name__}")
    return v


def parse_metadata(meta: Any) -> Export:
    """Check the metadata and make charrnn's config and vocabulary from it."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InteropError(f"no {FORMAT!r} format marker in the metadata: was it written by `charrnn export`?")
    if meta.get("format_version") not in [str(v) for v in range(1, FORMAT_VERSION + 1)]:
        raise InteropError(f"{FORMAT} format version {meta.get('format_version')!r}: this charrnn reads "
                           f"versions 1 to {FORMAT_VERSION}")
    v = _json_table(meta, "vocab")
    if v.get("specials") != {SPECIALS[UNK]: UNK, SPECIALS[EOS]: EOS} or v.get("first_char_id") != len(SPECIALS):
        raise InteropError(f"the vocabulary's special ids are not {SPECIALS[UNK]}={UNK}, {SPECIALS[EOS]}={EOS}")
    chars = _field(v, "chars", str, "vocab")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in chars):
        raise InteropError("unpaired surrogates in the vocabulary")
    if len(chars) + len(SPECIALS) > np.iinfo(np.uint16).max:  # ids are stored as uint16 at most
        raise InteropError(f"{len(chars):,} characters in the vocabulary is more than charrnn handles")
    vocab = Vocab(chars)  # refuses unsorted or repeated characters
    m = _json_table(meta, "model")
    cell, nonlinearity, dtype = (_field(m, k, str, "model") for k in ("cell", "nonlinearity", "dtype"))
    for name, value, allowed in (("cell", cell, CELLS), ("nonlinearity", nonlinearity, ACTIVATIONS),
                                 ("dtype", dtype, DTYPES)):
        if value not in allowed:
            raise InteropError(f"unknown {name} {value!r} (charrnn has {', '.join(allowed)})")
    hidden, layers, n_in = (_field(m, k, int, "model") for k in ("hidden_size", "num_layers", "input_size"))
    bidirectional = m.get("bidirectional", False)
    if not isinstance(bidirectional, bool):
        raise InteropError("the metadata's model.bidirectional is not true or false")
    if n_in != len(vocab) + bidirectional or m.get("output_size") != len(vocab):  # + <MASK> when bidirectional
        raise InteropError(f"the model reads and predicts {n_in} and {m.get('output_size')} ids but the "
                           f"vocabulary has {len(vocab)}" + (" (+ <MASK>)" if bidirectional else ""))
    if not (1 <= hidden <= 1 << 16 and 1 <= layers <= 64):
        raise InteropError(f"hidden_size {hidden} or num_layers {layers} out of range")
    d = _json_table(meta, "data")
    try:
        mode, objective = Mode(d.get("mode")), Objective(d.get("objective"))
    except ValueError as e:
        raise InteropError(f"the metadata's data: {e}") from None
    if bidirectional == (objective == Objective.NEXT):
        raise InteropError(f"a {'bidirectional' if bidirectional else 'forward'} model cannot have objective "
                           f"{objective.value!r}")
    head = m.get("head_size", 0)
    if type(head) is not int or not 0 <= head <= 1 << 16 or (head and meta["format_version"] == "1"):
        raise InteropError(f"the metadata's model.head_size is {head!r}")
    cfg = ModelConfig(len(vocab), cell, hidden, layers, nonlinearity, 0.0, dtype, bidirectional, objective, head)
    check_layout(cfg)
    seq_len = _field(d, "seq_len", int, "data")
    if not 1 <= seq_len <= MAX_SEQ_LEN:  # sampling's default length: bounded, so `sample` ends
        raise InteropError(f"the metadata's data.seq_len is {seq_len}")
    return Export(cfg, vocab, mode, objective, _field(d, "source", str, "data"), seq_len)


# ---------------------------------------------------------------- files


def write_file(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    """Write atomically: a temporary file in the same folder, then rename over `path`."""
    from safetensors.numpy import save_file

    path = Path(path)
    try:
        with atomic(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except OSError as e:
        raise InteropError(f"{path}: cannot write ({e.strerror or e})") from None


def read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """The JSON header of a safetensors file (read by hand, size capped), its length and the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise InteropError("not a safetensors file (shorter than its 8-byte header size)")
        (n,) = struct.unpack("<Q", head)  # little-endian u64: bytes of JSON that follow
        if n > MAX_HEADER:
            raise InteropError(f"not a safetensors file, or a hostile one: it claims a {n:,}-byte header "
                               f"(at most {MAX_HEADER:,} are read)")
        if 8 + n > size:
            raise InteropError(f"truncated: it claims a {n:,}-byte header but has {size - 8:,} bytes after the size")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InteropError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise InteropError("not a safetensors file (its header is not a table)")
    return header, n, size


def check_tensors(header: dict[str, Any], header_bytes: int, size: int, cfg: ModelConfig) -> None:
    """Every tensor the config needs, and no other, with its dtype, shape and byte count, and a
    file exactly as long as they say: checked from the header, before any data is read."""
    declared = {k: v for k, v in header.items() if k != "__metadata__"}
    shapes = torch_shapes(cfg)
    missing, extra = sorted(set(shapes) - set(declared)), sorted(set(declared) - set(shapes))
    if missing:
        raise InteropError(f"missing tensor {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1
                                                              else ""))
    if extra:
        raise InteropError(f"unexpected tensor {extra[0]} for a {cfg.layers}-layer {cfg.cell}")
    want_dtype = SAFETENSORS_DTYPES[cfg.dtype]
    itemsize = np.dtype(cfg.dtype).itemsize
    total = 0
    for name, shape in shapes.items():
        info = declared[name]
        if not isinstance(info, dict):
            raise InteropError(f"{name}: damaged header entry")
        if info.get("dtype") != want_dtype:
            raise InteropError(f"{name} is {info.get('dtype')}, the config says {cfg.dtype} ({want_dtype})")
        if info.get("shape") != list(shape):
            raise InteropError(f"{name} has shape {info.get('shape')}, the config says {list(shape)}")
        offsets = info.get("data_offsets")
        n = int(np.prod(shape)) * itemsize
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and offsets[1] - offsets[0] == n):
            raise InteropError(f"{name}: its data offsets do not match its shape")
        total += n
    expected = 8 + header_bytes + total
    if size != expected:
        raise InteropError(f"{'truncated' if size < expected else 'trailing data'}: the tensors need a file of "
                           f"{expected:,} bytes, it has {size:,}")


def read_file(path: str | os.PathLike) -> tuple[Export, Params]:
    """Check a charrnn-torch file from its header, then load it; any problem is one InteropError
    naming the file. Nothing is unpickled: safetensors holds raw arrays."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    size = limits.regular_file(path, "safetensors file")
    limits.require(2 * size, f"importing {path}")  # the tensors as read, then in charrnn's layout
    try:
        header, header_bytes, size = read_header(path)
        export = parse_metadata(header.get("__metadata__"))
        check_tensors(header, header_bytes, size, export.cfg)
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise InteropError(f"not a readable safetensors file ({e})") from None
        for name, t in tensors.items():
            if not np.all(np.isfinite(t)):
                raise InteropError(f"{name} has NaN or infinite values")
        return export, from_torch(tensors, export.cfg)
    except CharrnnError as e:  # OptionError included: a bad file is not a bad option
        raise InteropError(f"{path}: {e}") from None
    except OSError as e:
        raise InteropError(f"{path}: cannot read it ({e.strerror or e})") from None
