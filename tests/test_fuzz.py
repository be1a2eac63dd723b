"""Property tests (hypothesis) for issue #7: arbitrary text, sampling options and damaged
checkpoints. The default run tries a few dozen examples per property; `pytest -m slow`
runs the same properties with thousands."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import run_captured, run_quietly
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn import checkpoint, data, model
from charrnn.errors import CharrnnError
from charrnn.model import ModelConfig
from charrnn.sample import generate
from charrnn.vocab import EOS, Vocab, count_chars

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# arbitrary text, with line endings, non-BMP characters and NUL made likely
SPICE = st.sampled_from(["\r\n", "\r", "\n", "😀", "𝔘", "\U0010ffff", "\x00", "\ufffd", "é", " ", "\t"])
TEXT = st.lists(st.one_of(st.characters(), st.characters(max_codepoint=0x7F), SPICE), max_size=200).map("".join)


# ---------------------------------------------------------------- vocabulary


def check_round_trip(text: str) -> None:
    vocab = Vocab.build(count_chars(text))
    ids, n_unk = vocab.encode(text)
    assert n_unk == 0 and len(ids) == len(text)
    assert ids.dtype == (np.uint8 if len(vocab) <= 256 else np.uint16)
    assert vocab.decode(ids) == text
    lines_vocab = Vocab.build(count_chars(text), exclude="\n")
    ids, n_unk = lines_vocab.encode(text, newline_as_eos=True)
    assert n_unk == 0 and np.count_nonzero(ids == EOS) == text.count("\n")
    assert lines_vocab.decode(ids) == text


@FAST
@given(TEXT)
def test_encode_decode_round_trip(text):
    check_round_trip(text)


def check_build(text: str, min_count: int, max_size: int) -> None:
    counts = count_chars(text)
    vocab = Vocab.build(counts, min_count, max_size)
    kept = vocab.chars
    frequent = sorted({c for c in text if counts[ord(c)] >= min_count})
    assert list(kept) == sorted(kept) and len(set(kept)) == len(kept)
    assert set(kept) <= set(frequent)
    if max_size and len(frequent) > max_size:
        assert len(kept) == max_size
        # nothing dropped is more frequent than anything kept
        dropped = set(frequent) - set(kept)
        assert max(counts[ord(c)] for c in dropped) <= min(counts[ord(c)] for c in kept)
    else:
        assert list(kept) == frequent
    ids, n_unk = vocab.encode(text)
    assert n_unk == sum(1 for c in text if c not in set(kept))
    assert vocab.decode(ids) == "".join(c if c in set(kept) else "\ufffd" for c in text)


@FAST
@given(TEXT, st.integers(1, 5), st.integers(0, 12))
def test_build_with_min_count_and_max_size(text, min_count, max_size):
    check_build(text, min_count, max_size)


def check_read_text(tmp: Path, raw: bytes) -> None:
    """read_text of any bytes: the text with universal newlines, or a CharrnnError."""
    p = tmp / "t.txt"
    p.write_bytes(raw)
    try:
        text = data.read_text(p)
    except CharrnnError:
        return
    expected = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    assert text == expected and text.strip() and "\x00" not in raw[:65536].decode("utf-8", "ignore")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FAST
@given(st.one_of(TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=200)))
def test_read_text_of_any_bytes(scratch, raw):
    check_read_text(scratch, raw)


# ---------------------------------------------------------------- sampling


def tiny_model(mode: str, scale: float) -> tuple[dict, ModelConfig, Vocab]:
    vocab = Vocab("\n abcdeé😀" if mode == "stream" else " abcdeé😀")
    cfg = ModelConfig(len(vocab), cell="gru", hidden_size=8, layers=2)
    params = model.init_params(cfg, np.random.default_rng(1))
    params = {k: (v * scale).astype(v.dtype) for k, v in params.items()}  # scale: saturated softmax
    return params, cfg, vocab


SAMPLE_OPTIONS = dict(
    mode=st.sampled_from(["lines", "stream"]),
    scale=st.sampled_from([1.0, 30.0, 1e4]),
    n=st.integers(1, 4),
    length=st.integers(1, 30),
    # not below 1e-300, where logits / temperature overflow: see test_tiny_temperature_never_emits_unk
    temperature=st.one_of(st.just(0.0), st.floats(1e-300, 1e-3), st.floats(0.0, 5.0), st.floats(5.0, 1e300)).filter(
        lambda t: t == 0 or t >= 1e-300),
    top_k=st.integers(0, 15),
    top_p=st.one_of(st.just(1.0), st.floats(1e-9, 1.0, exclude_min=False)),
    prime=st.text(max_size=6),
    allow_unk=st.booleans(),
    seed=st.integers(0, 2**32),
)


def check_generate(mode, scale, n, length, temperature, top_k, top_p, prime, allow_unk, seed) -> None:
    params, cfg, vocab = tiny_model(mode, scale)
    s = generate(params, cfg, vocab, mode, n=n, length=length, temperature=temperature, top_k=top_k,
                 top_p=top_p, prime=prime, rng=np.random.default_rng(seed), allow_unk=allow_unk)
    assert len(s.texts) == n
    for t in s.texts:
        assert t.startswith(prime)
        new = t[len(prime):]
        assert set(new) <= set(vocab.chars) | ({"\ufffd"} if allow_unk else set()), new
        if mode == "lines":
            assert "\n" not in new and len(new) <= length
        else:
            assert len(new) == length


@FAST
@given(**SAMPLE_OPTIONS)
def test_generate_with_any_options(mode, scale, n, length, temperature, top_k, top_p, prime, allow_unk, seed):
    check_generate(mode, scale, n, length, temperature, top_k, top_p, prime, allow_unk, seed)


@pytest.mark.parametrize("temperature", [2.2e-311, 2.2250738585072014e-308])
def test_tiny_temperature_never_emits_unk(temperature):
    check_generate("lines", 30.0, 1, 7, temperature, 0, 1.0, "", False, 0)


# ---------------------------------------------------------------- checkpoints


class Valid(bytes):
    def __repr__(self) -> str:  # keeps hypothesis reports short
        return f"<valid checkpoint, {len(self)} bytes>"


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    """The bytes of a small, valid checkpoint (lines mode, with best weights and optimizer state)."""
    d = tmp_path_factory.mktemp("valid")
    (d / "names.txt").write_text("anna\nbob\ncarl\ndora\nemil\nfina\ngus\nhana\n" * 3)
    assert run_quietly("train", d / "names.txt", "--out", d / "m.npz", "--hidden-size", "4", "--steps", "2",
                       "--eval-every", "1", "--quiet") == 0
    return Valid((d / "m.npz").read_bytes())


def load_or_refuse(path: Path) -> checkpoint.Checkpoint | None:
    """What every command relies on: a checkpoint, or a CharrnnError; anything else fails the test."""
    try:
        return checkpoint.load(path)
    except CharrnnError as e:
        assert str(e).startswith(f"{path}: ")
        return None


def mutate(b: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    a = bytearray(b)
    for pos, value in edits:
        a[pos % len(a)] = value
    return bytes(a[:cut] if cut is not None else a)


MUTATIONS = dict(edits=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=6),
                 cut=st.one_of(st.none(), st.integers(0, 40_000)))


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_never_load(scratch, raw):
    p = scratch / "random.npz"
    p.write_bytes(raw)
    assert load_or_refuse(p) is None


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_after_a_zip_header(scratch, raw):
    p = scratch / "zipish.npz"
    p.write_bytes(b"PK\x03\x04" + raw)
    assert load_or_refuse(p) is None


@FAST
@given(**MUTATIONS)
def test_mutated_or_truncated_checkpoint_loads_or_is_refused(scratch, valid, edits, cut):
    p = scratch / "mutated.npz"
    p.write_bytes(mutate(valid, edits, cut))
    load_or_refuse(p)


def header_offsets(b: bytes) -> list[int]:
    """Offsets of the zip headers and .npy headers in an uncompressed .npz: where damage is not caught
    by a CRC, so where mutations are most interesting."""
    out = []
    with zipfile.ZipFile(io.BytesIO(b)) as z:
        for info in z.infolist():
            out += list(range(info.header_offset, info.header_offset + 30 + len(info.filename) + 128))
    start = b.find(b"PK\x05\x06")
    out += list(range(b.find(b"PK\x01\x02"), len(b))) if start > 0 else []
    return [o for o in out if o < len(b)]


@FAST
@given(st.data())
def test_mutated_headers_load_or_are_refused(scratch, valid, d):
    offsets = header_offsets(valid)
    edits = d.draw(st.lists(st.tuples(st.sampled_from(offsets), st.integers(0, 255)), min_size=1, max_size=4))
    p = scratch / "headers.npz"
    p.write_bytes(mutate(valid, edits, None))
    load_or_refuse(p)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def meta_paths(meta, prefix=()):
    """Every key path in the meta JSON."""
    for k, v in meta.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from meta_paths(v, prefix + (k,))


def check_meta_mutation(scratch: Path, valid: bytes, d) -> None:
    src = scratch / "valid.npz"
    src.write_bytes(valid)
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    paths = sorted(meta_paths(meta))
    for _ in range(d.draw(st.integers(1, 3))):
        path = d.draw(st.sampled_from(paths))
        node = meta
        for k in path[:-1]:  # an earlier draw may have replaced or removed a parent
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if d.draw(st.booleans()):
                node[path[-1]] = d.draw(JSON)
            else:
                node.pop(path[-1], None)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    p = scratch / "meta.npz"
    with open(p, "wb") as f:
        np.savez(f, **arrays)
    if load_or_refuse(p) is None:
        return
    # it loaded: every command that reads checkpoints must then work or say why in one line
    (scratch / "held.txt").write_text("anna\nzoe\n")
    for args in (["inspect", p], ["inspect", p, "--json"], ["sample", p, "-n", "2", "--length", "5"],
                 ["sample", p, "-n", "2", "--length", "5", "--novel"], ["eval", p, scratch / "held.txt"]):
        code, _, err = run_captured(*args)
        assert "Traceback" not in err
        assert code == 0 or (code in (1, 2) and sum(line.startswith("Error:") for line in err.splitlines()) == 1), \
            (args, err, meta)


@FAST
@given(st.data())
def test_checkpoint_with_odd_metadata_works_or_is_refused(scratch, valid, data):
    check_meta_mutation(scratch, valid, data)


# ---------------------------------------------------------------- the long runs


@pytest.mark.slow
@LONG
@given(TEXT, st.integers(1, 5), st.integers(0, 12))
def test_long_vocab(text, min_count, max_size):
    check_round_trip(text)
    check_build(text, min_count, max_size)


@pytest.mark.slow
@LONG
@given(**SAMPLE_OPTIONS)
def test_long_generate(mode, scale, n, length, temperature, top_k, top_p, prime, allow_unk, seed):
    check_generate(mode, scale, n, length, temperature, top_k, top_p, prime, allow_unk, seed)


@pytest.mark.slow
@LONG
@given(**MUTATIONS)
def test_long_mutations(scratch, valid, edits, cut):
    p = scratch / "mutated.npz"
    p.write_bytes(mutate(valid, edits, cut))
    load_or_refuse(p)


@pytest.mark.slow
@LONG
@given(st.data())
def test_long_header_mutations(scratch, valid, d):
    test_mutated_headers_load_or_are_refused.hypothesis.inner_test(scratch, valid, d)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_long_meta_mutations(scratch, valid, data):
    check_meta_mutation(scratch, valid, data)
