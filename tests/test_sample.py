"""charrnn.sample: generating lines, each with its own state, and novelty (new lines first,
hashed lines of the whole text)."""

from itertools import pairwise

import numpy as np
from helpers import TEN_NAMES_X3, small_trainer

from charrnn import checkpoint, model, sample
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
    ck.meta["mode"] = "lines"
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
