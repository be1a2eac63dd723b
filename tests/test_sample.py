"""charrnn.sample and `charrnn sample`: generating lines and running text, the sampling
options, --prime, and novelty (new lines first, --novel, --allow-seen).

Sampling options that are refused are in test_cli.py; arbitrary options are fuzzed in
test_fuzz.py."""

import json
import re
import sys
from itertools import pairwise

import numpy as np
import pytest
from helpers import NAMES_X4, TEN_NAMES_X3, TINY_H16_12STEPS, error_line, run, small_trainer

from charrnn import checkpoint, model, sample
from charrnn.config import Mode
from charrnn.model import ModelConfig
from charrnn.vocab import EOS, UNK, Vocab

# ---------------------------------------------------------------- generating


def test_each_line_keeps_its_own_state_when_others_end():
    """Lines that end leave the sampling batch; every character of every sample must still
    be one of the 2 likeliest after that sample's own prefix (top_k=2), re-run alone."""
    vocab = Vocab("abcdefgh")
    cfg = ModelConfig(len(vocab), "lstm", 16, layers=2, dtype="float64")
    rng = np.random.default_rng(2)  # a model whose lines end anywhere from 2 to 15 characters
    params = model.init_params(cfg, rng)
    s = sample.generate(params, cfg, vocab, "lines", n=40, length=15, top_k=2, rng=rng)
    lengths = {len(t) for t in s.texts}
    assert len(lengths) > 4 and max(lengths) == 15
    for text in s.texts:
        alone = model.Stepper(params, cfg, model.zero_state(cfg, 1), banned=[UNK])
        ids = [EOS, *vocab.encode(text)[0]] + ([EOS] if len(text) < 15 else [])
        for prev, nxt in pairwise(ids):
            z = alone(np.array([prev]))[0]
            assert nxt in np.argsort(z)[-2:], text


# ---------------------------------------------------------------- novelty


def test_novelty_hashes_cover_validation_lines_too():
    """A sample equal to a held-out line is still a line of the user's file, not a new one."""
    names = [f"name{k}" for k in range(40)]
    tr = small_trainer("\n".join(names) + "\n", "lines", steps=1)
    assert len(tr.corpus.val_starts) > 0
    np.testing.assert_array_equal(tr.checkpoint().line_hashes, checkpoint.line_hashes(names))


def test_membership_in_sorted_hashes_matches_isin():
    rng = np.random.default_rng(0)
    table = np.unique(rng.integers(0, 50, 30, dtype=np.uint64))
    values = rng.integers(0, 60, 200, dtype=np.uint64)
    np.testing.assert_array_equal(sample._in_sorted(values, table), np.isin(values, table))
    assert not sample._in_sorted(values, table[:0]).any()


def test_sampling_puts_new_lines_first_and_tops_up_with_the_rest():
    tr = small_trainer(TEN_NAMES_X3, "lines", steps=30)
    tr.fit()
    ck = tr.checkpoint()
    ck.line_hashes = np.zeros(0, np.uint64)
    ck.meta.mode = Mode.LINES
    rng = np.random.default_rng(3)
    texts = sample.generate_from(ck, 40, novel=False, rng=rng).texts
    first = next(t for t in texts if t)
    ck.line_hashes = checkpoint.line_hashes([first])  # now `first` is a line of the text
    draws = 0
    for novel in (None, True):
        s = sample.generate_from(ck, 40, novel=novel, rng=np.random.default_rng(3))
        new = [t for t in s.texts if t and t != first]
        assert s.texts[: len(new)] == new and len(set(new)) == len(new)  # new, distinct, non-empty first
        assert len(s.texts) == (40 if novel is None else len(new)) and s.repeats == len(s.texts) - len(new)
        draws = s.generated
    assert draws > 40  # the repeats of `first` and the duplicates sent it to more rounds
    seen = sample.generate_from(ck, 40, novel=False, rng=np.random.default_rng(4)).texts
    for table in (checkpoint.line_hashes(seen), checkpoint.hash_each(seen)[::-1]):  # sorted or not
        ck.line_hashes = table
        assert sample.generate_from(ck, 40, novel=None, max_rounds=1, rng=np.random.default_rng(4)).novel == 0
    greedy = sample.generate_from(ck, 3, novel=None, temperature=0)
    assert greedy.generated == 3  # deterministic: one round, not 20 copies of the same batch


# ---------------------------------------------------------------- charrnn sample


def test_one_stream_is_printed_as_it_grows(tmp_path, capsys, prose_file, monkeypatch):
    out = tmp_path / "prose.npz"
    assert run(capsys, "train", prose_file, "--out", out, "--mode", "stream", *TINY_H16_12STEPS)[0] == 0
    writes = []
    real_write = sys.stdout.write
    monkeypatch.setattr(sys.stdout, "write", lambda s: writes.append(s) or real_write(s))
    code, stdout, err = run(capsys, "sample", out, "--length", 300, "--seed", 1, "--prime", "It was")
    assert code == 0, err
    assert len(writes) > 5  # in pieces, not all at the end
    ck = checkpoint.load(out)
    whole = sample.generate_from(ck, 1, length=300, prime="It was", rng=np.random.default_rng(1)).texts[0]
    assert stdout == whole + "\n"  # the same text as when it is written at once


def test_sample_options(capsys, names_ckpt):
    a = run(capsys, "sample", names_ckpt, "-n", 5, "--seed", 3)
    b = run(capsys, "sample", names_ckpt, "-n", 5, "--seed", 3)
    assert a == b and a[0] == 0 and len(a[1].splitlines()) == 5
    code, out, _ = run(capsys, "sample", names_ckpt, "-n", 4, "--temperature", 0)
    assert code == 0 and len(set(out.splitlines())) == 1  # greedy: every sample is the same
    for opt in (["--top-k", 1], ["--top-p", 0.01]):
        code, out, _ = run(capsys, "sample", names_ckpt, "-n", 4, "--seed", 0, *opt)
        assert code == 0 and len(set(out.splitlines())) == 1  # only the likeliest character each time
    code, out, _ = run(capsys, "sample", names_ckpt, "-n", 3, "--prime", "an", "--seed", 0)
    assert code == 0 and all(s.startswith("an") for s in out.splitlines())


def test_sample_prime_with_unknown_characters_warns(capsys, names_ckpt):
    code, out, err = run(capsys, "sample", names_ckpt, "-n", 2, "--prime", "Zoë", "--seed", 0)
    assert code == 0
    assert "2 character(s) of --prime are not in the vocabulary" in err
    assert "\ufffd" not in out.replace("Zoë", "")  # <UNK> is never generated without --allow-unk


def test_sample_line_models_prefer_new_lines_by_default(capsys, names_ckpt):
    training = set(NAMES_X4.split())
    code, out, err = run(capsys, "sample", names_ckpt, "-n", 30, "--seed", 0)
    assert code == 0 and len(out.splitlines()) == 30
    assert "novelty:" in err
    got = out.splitlines()
    k = 30 - int(re.search(r"the last (\d+) are", err).group(1)) if "the last" in err else 30
    assert not set(got[:k]) & training and len(set(got[:k])) == k and "" not in got[:k]  # new, distinct first
    code, out, err = run(capsys, "sample", names_ckpt, "-n", 30, "--seed", 0, "--allow-seen")
    assert code == 0 and len(out.splitlines()) == 30 and "novelty" not in err


def test_sample_novel_reports_rate(capsys, names_ckpt):
    code, out, err = run(capsys, "sample", names_ckpt, "-n", 5, "--novel", "--seed", 0)
    assert code == 0
    training = set(NAMES_X4.split())
    assert not set(out.splitlines()) & training
    assert "novelty:" in err and "are not in the training text" in err


def test_several_streams_are_labelled_and_the_first_is_printed_as_it_grows(tmp_path, capsys, prose_file,
                                                                          monkeypatch):
    out = tmp_path / "prose.npz"
    assert run(capsys, "train", prose_file, "--out", out, "--mode", "stream", *TINY_H16_12STEPS)[0] == 0
    writes = []
    real_write = sys.stdout.write
    monkeypatch.setattr(sys.stdout, "write", lambda s: writes.append(s) or real_write(s))
    code, stdout, err = run(capsys, "sample", out, "-n", 3, "--length", 200, "--seed", 1, "--prime", "It")
    assert code == 0, err
    assert len(writes) > 5
    ck = checkpoint.load(out)
    texts = sample.generate_from(ck, 3, length=200, prime="It", rng=np.random.default_rng(1)).texts
    assert stdout == "".join(f"=== sample {k} of 3 ===\n{t}\n" for k, t in enumerate(texts, 1))


def test_several_temperatures_each_get_a_labelled_block(capsys, names_ckpt):
    code, out, err = run(capsys, "sample", names_ckpt, "-n", 3, "--temperature", "0,1.5", "--seed", 0)
    assert code == 0, err
    lines = out.splitlines()
    assert [lines[0], lines[4]] == ["=== temperature 0 ===", "=== temperature 1.5 ==="]
    assert len(set(lines[1:4])) == 1  # greedy
    code, out, _ = run(capsys, "sample", names_ckpt, "-n", 2, "--temperature", "0,1.5", "--seed", 0, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["sample"], r["temperature"]) for r in rows] == [(1, 0.0), (2, 0.0), (1, 1.5), (2, 1.5)]
    assert rows[0]["text"] == lines[1]


def test_prime_file_is_the_prime(tmp_path, capsys, names_ckpt):
    (tmp_path / "prime.txt").write_text("an\n")  # a lines model: the file's line end is not part of the name
    a = run(capsys, "sample", names_ckpt, "-n", 3, "--seed", 0, "--prime-file", tmp_path / "prime.txt")
    b = run(capsys, "sample", names_ckpt, "-n", 3, "--seed", 0, "--prime", "an")
    assert a == b and a[0] == 0
    code, _, err = run(capsys, "sample", names_ckpt, "--prime", "a", "--prime-file", tmp_path / "prime.txt")
    assert error_line(code, err) == "Error: --prime and --prime-file both give the text to start from: choose one"


def test_novel_says_how_few_it_found(tmp_path, capsys):
    """Greedy samples are all the same name, so at most one of five is new and distinct: --novel says so."""
    p = tmp_path / "two.txt"
    p.write_text("anna\nbob\n" * 30)
    out = tmp_path / "two.npz"
    assert run(capsys, "train", p, "--out", out, "--steps", 60, "--hidden-size", 16, "-q")[0] == 0
    code, _, err = run(capsys, "sample", out, "-n", 5, "--novel", "--temperature", 0)
    assert code == 0
    assert err.splitlines()[-1] in ("Warning: only 0 novel samples found", "Warning: only 1 novel samples found")


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5, 1e-30])
def test_one_row_is_picked_as_in_a_batch(temperature):
    """pick's path for a single row (one stream, softmax at a temperature) draws what the batched
    path draws for that row from the same generator state: -inf never, NaN rows as the batched path does."""
    rng = np.random.default_rng(7)
    for trial in range(300):  # every 7th with logits in the hundreds: exp overflows without the shift
        V = int(rng.integers(2, 70))
        z = (rng.standard_normal(V) * rng.uniform(0.1, 30) * (100 if trial % 7 == 0 else 1)).astype(np.float32)
        z[rng.random(V) < 0.2] = -np.inf
        z[int(rng.integers(V))] = rng.standard_normal()  # at least one finite
        if trial % 50 == 0:
            z[:] = np.nan
        elif trial % 50 == 25:  # one NaN, or one +inf, among finite logits
            z[int(rng.integers(V))] = np.nan if trial % 100 == 25 else np.inf
        with np.errstate(invalid="ignore"):  # +inf - +inf
            one = sample.pick(z[None], np.random.default_rng(trial), temperature)
            batch = sample.pick(np.stack([z, z]), np.random.default_rng(trial), temperature)  # row 0's u first
        assert one.shape == (1,) and one[0] == batch[0], (trial, z)
        assert trial % 25 == 0 or np.isfinite(z[one[0]])  # NaN or +inf rows aside: never a -inf


def test_the_prime_warning_comes_before_the_text(capsys, monkeypatch, good):
    """Running text is written as it is generated: a warning about the prime printed when the
    sample was done came after 500 characters of it, off the top of the screen."""
    import io

    both = io.StringIO()  # stdout and stderr in the order they were written
    monkeypatch.setattr(sys, "stdout", both)
    monkeypatch.setattr(sys, "stderr", both)
    code, _, _ = run(capsys, "sample", good / "prose.npz", "--prime", "Zoë", "--length", "50", "--seed", 0)
    assert code == 0
    lines = both.getvalue().splitlines()
    assert "of --prime are not in the vocabulary" in lines[0], lines[:3]
    assert lines[1].startswith("Zoë")
