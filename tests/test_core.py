"""The library without the CLI: vocabulary, data modes, model, loss, training, checkpoints."""

import math
from itertools import pairwise

import numpy as np
import pytest
from helpers import TEN_NAMES_X3, small_trainer

from charrnn import checkpoint, data, model, optim, sample
from charrnn.errors import CharrnnError
from charrnn.model import ModelConfig
from charrnn.train import TrainConfig, Trainer
from charrnn.vocab import EOS, UNK, Vocab, count_chars

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


# ---------------------------------------------------------------- vocabulary


def test_vocab_is_sorted_with_specials_first():
    v = Vocab.build(count_chars("banana"))
    assert v.chars == "abn"
    assert [v.token(i) for i in range(len(v))] == ["<UNK>", "<EOS>", "a", "b", "n"]
    ids, unk = v.encode("banana")
    assert ids.tolist() == [3, 2, 4, 2, 4, 2] and unk == 0
    assert ids.dtype == np.uint8


def test_unseen_characters_become_unk_and_are_counted():
    v = Vocab.build(count_chars("abc"))
    ids, unk = v.encode("abxcy")
    assert ids.tolist() == [2, 3, UNK, 4, UNK]
    assert unk == 2
    assert v.decode(ids) == "ab\ufffdc\ufffd"


def test_min_count_and_max_size():
    counts = count_chars("aaaabbbcc d")
    assert Vocab.build(counts, min_count=3).chars == "ab"
    assert Vocab.build(counts, max_size=2).chars == "ab"
    assert Vocab.build(counts, min_count=2, max_size=10).chars == "abc"


@pytest.mark.parametrize("text", ["Καλημέρα κόσμε", "你好，世界。你好", "emoji 🙂🚀 and ünïcödé", "\U0001f600" * 3])
def test_non_ascii_round_trip(text):
    v = Vocab.build(count_chars(text))
    ids, unk = v.encode(text)
    assert unk == 0
    assert v.decode(ids) == text


def test_large_vocabulary_uses_uint16():
    text = "".join(chr(0x4E00 + i) for i in range(1000))
    v = Vocab.build(count_chars(text))
    ids, _ = v.encode(text)
    assert ids.dtype == np.uint16 and len(v) == 1002


def test_crlf_is_read_as_lf(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"anna\r\nbob\r\ncarl\r\n")
    text = data.read_text(p)
    assert text == "anna\nbob\ncarl\n"
    c = data.make_corpus(text, "lines", val_fraction=0)
    assert "\r" not in c.vocab.chars and "\n" not in c.vocab.chars
    assert c.vocab.decode(c.train) == "anna\nbob\ncarl\n"


# ---------------------------------------------------------------- data modes


def test_auto_mode_rule():
    assert data.choose_mode("emma\nolivia\nava\nisabella\n") == "lines"
    prose = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    assert data.choose_mode(prose) == "stream"
    long_lines = "\n".join(["x" * 80] * 20)
    assert data.choose_mode(long_lines) == "stream"
    assert data.choose_mode("just one line") == "stream"


def test_lines_mode_split_is_deterministic_and_complete():
    names = [f"name{i}" for i in range(100)]
    text = "\n".join(names) + "\n\n"
    a = data.make_corpus(text, "lines", val_fraction=0.2, seed=3)
    b = data.make_corpus(text, "lines", val_fraction=0.2, seed=3)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert len(a.train_starts) == 80 and len(a.val_starts) == 20
    decoded = sorted((a.vocab.decode(a.train) + a.vocab.decode(a.val)).split("\n")[:-1])
    assert decoded == sorted(names)
    c = data.make_corpus(text, "lines", val_fraction=0.2, seed=4)
    assert not np.array_equal(a.val, c.val)


def test_lines_batch_starts_from_eos_and_masks_padding():
    c = data.make_corpus("ab\nabcd\n", "lines", val_fraction=0)
    x, y, mask = data.lines_batch(c.train, c.train_starts, np.array([0, 1]), max_len=64)
    assert x.shape == (5, 2)
    assert x[0].tolist() == [EOS, EOS]
    assert c.vocab.decode(y[:3, 0]) == "ab\n" and mask[:, 0].tolist() == [1, 1, 1, 0, 0]
    assert np.array_equal(x[1:], y[:-1])


def test_stream_mode_split_is_the_tail():
    text = "abcdefghij" * 10
    c = data.make_corpus(text, "stream", val_fraction=0.1)
    assert c.vocab.decode(c.val) == text[-10:]
    layout = data.StreamLayout(len(c.train), batch_size=3, seq_len=5)
    x, y = layout.batch(c.train, 1)
    assert x.shape == (5, 3)
    assert np.array_equal(x[1:], y[:-1])  # targets are inputs shifted by one
    assert c.vocab.decode(x[:, 0]) == text[5:10]


def test_short_text_shrinks_batch_then_sequence():
    b, t, notes = data.fit_stream(20, batch_size=32, seq_len=64)
    assert (b, t) == (1, 19) and len(notes) == 2


# ---------------------------------------------------------------- model


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 3])
def test_parameter_counts_follow_the_textbook(cell, layers):
    cfg = ModelConfig(30, cell, 17, layers)
    params = model.init_params(cfg, np.random.default_rng(0))
    n_a, n_x, n_y = 17, 30, 30
    per_rnn = lambda n_x: (n_a + n_x) * n_a + n_a  # noqa: E731
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    expected = gates * per_rnn(n_x) + (layers - 1) * gates * per_rnn(n_a) + n_a * n_y + n_y
    assert sum(p.size for p in params.values()) == expected == model.textbook_param_count(cfg)


def test_init_details():
    cfg = ModelConfig(10, "lstm", 8, 1)
    p = model.init_params(cfg, np.random.default_rng(0))
    assert np.all(p["b0"][8:16] == 1) and np.all(p["b0"][:8] == 0)  # forget gate bias 1
    relu = model.init_params(ModelConfig(10, "rnn", 8, 1, "relu"), np.random.default_rng(0))
    assert np.array_equal(relu["W_h0"], np.eye(8))
    assert p["W_h0"].dtype == np.float32
    q = p["W_h0"][:, :8]
    np.testing.assert_allclose(q.T @ q, np.eye(8), atol=1e-5)  # orthogonal blocks


@pytest.mark.parametrize("cell,activation", CELLS)
def test_fresh_model_loss_is_near_uniform(cell, activation):
    V = 65
    cfg = ModelConfig(V, cell, 64, 2, activation)
    p = model.init_params(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (32, 16)), rng.integers(0, V, (32, 16))
    logits, _, _ = model.forward(p, cfg, x)
    loss = model.cross_entropy(logits, y, grad=False)[0]
    assert abs(loss - math.log(V)) / math.log(V) < 0.05


def test_loss_units():
    logits = np.zeros((1, 1, 4))
    loss = model.cross_entropy(logits, np.zeros((1, 1), int), grad=False)[0]
    assert loss == pytest.approx(math.log(4))


@pytest.mark.parametrize("cell,activation", CELLS)
def test_each_cell_overfits_a_tiny_text(cell, activation):
    text = "the quick brown fox jumps over the lazy dog. "
    c = data.make_corpus(text, "stream", val_fraction=0)
    cfg = ModelConfig(len(c.vocab), cell, 48, 1, activation)
    steps = 800 if activation == "relu" else 400  # the identity-initialised relu RNN learns slower
    tc = TrainConfig(seq_len=len(text), batch_size=1, lr=1e-2, steps=steps, eval_every=steps, clip=5.0)
    tr = Trainer(c, cfg, tc)
    tr.fit()
    state = None  # the whole text is one chunk; score it from a fresh state
    x, y = tr.layout.batch(c.train, 0)
    logits, state, _ = model.forward(tr.params, cfg, x, state)
    loss = model.cross_entropy(logits, y, grad=False)[0]
    assert loss < 0.05, f"{cell}/{activation} only got to {loss:.3f} nats/char"


@pytest.mark.parametrize("cell,activation", CELLS)
def test_sampling_steps_match_the_training_forward(cell, activation):
    """model.Stepper (sampling, one character at a time) against model.forward over the
    whole sequence: the same logits at every step, two layers, float64."""
    cfg = ModelConfig(vocab_size=9, cell=cell, hidden_size=6, layers=2, activation=activation, dtype="float64")
    rng = np.random.default_rng(5)
    params = model.init_params(cfg, rng)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}  # not the init pattern
    x = rng.integers(0, 9, (7, 3))
    logits, final, _ = model.forward(params, cfg, x)
    step = model.Stepper(params, cfg, model.zero_state(cfg, 3), banned=[0])
    for t in range(7):
        z = step(x[t])
        assert np.isneginf(z[:, 0]).all()
        np.testing.assert_allclose(z[:, 1:], logits[t, :, 1:], rtol=1e-12, atol=1e-12)
    for a, b in zip(step.state, final):
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


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


def test_stepper_keep_drops_streams():
    cfg = ModelConfig(vocab_size=9, cell="gru", hidden_size=5, layers=2, dtype="float64")
    params = model.init_params(cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, 9, (6, 4))
    all4 = model.Stepper(params, cfg, model.zero_state(cfg, 4))
    two = model.Stepper(params, cfg, model.zero_state(cfg, 2))
    for t in range(6):
        if t == 3:
            all4.keep(np.array([False, True, False, True]))
        z4 = all4(x[t, [1, 3]] if t >= 3 else x[t])
        z2 = two(x[t, [1, 3]])
        np.testing.assert_allclose(z4 if t >= 3 else z4[[1, 3]], z2, rtol=1e-12)


def test_clipping():
    g = {"a": np.array([3.0, 4.0]), "b": np.array([0.0])}
    assert optim.clip_(g, 1.0, "norm") == pytest.approx(5.0)
    np.testing.assert_allclose(g["a"], [0.6, 0.8])
    g = {"a": np.array([3.0, -4.0, 0.5])}
    optim.clip_(g, 1.0, "value")
    np.testing.assert_allclose(g["a"], [1.0, -1.0, 0.5])
    g = {"a": np.array([3.0, 4.0])}
    optim.clip_(g, 0.0, "norm")  # off
    np.testing.assert_allclose(g["a"], [3.0, 4.0])


@pytest.mark.parametrize("name", ["adam", "adagrad", "sgd"])
def test_optimizers_minimise_a_quadratic(name):
    p = {"w": np.array([3.0, -2.0])}
    state = optim.init_state(name, p)
    for _ in range(500):
        optim.step_(name, p, {"w": 2 * p["w"]}, state, lr=0.5 if name == "adagrad" else 0.05)
    assert np.abs(p["w"]).max() < 1e-2
    assert int(state["t"]) == 500


# ---------------------------------------------------------------- determinism and checkpoints


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


def test_same_seed_same_model_losses_and_samples():
    runs = []
    for _ in range(2):
        tr = small_trainer(TEN_NAMES_X3, "lines")
        tr.fit()
        s = sample.generate(tr.params, tr.model_cfg, tr.corpus.vocab, "lines", n=5,
                            rng=np.random.default_rng(7))
        runs.append((tr.params, tr.train_losses, tr.val_losses, s.texts))
    (p1, l1, v1, s1), (p2, l2, v2, s2) = runs
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert l1 == l2 and v1 == v2 and s1 == s2
    other = small_trainer(TEN_NAMES_X3, "lines", seed=1)
    other.fit()
    assert not np.array_equal(other.params["W_h0"], p1["W_h0"])


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
    a, _, _ = model.forward(tr.params, tr.model_cfg, x)
    b, _, _ = model.forward(ck.params, ck.cfg, x)
    assert np.array_equal(a, b)
    assert ck.vocab.chars == tr.corpus.vocab.chars
    assert ck.meta["progress"]["step"] == 20
    assert len(ck.train_losses) == 20 and ck.val_losses.shape == (2, 2)
    assert all(np.array_equal(ck.opt[k], tr.opt[k]) for k in tr.opt)


def test_float64_is_selectable():
    c = data.make_corpus(TEN_NAMES_X3, "lines")
    tr = Trainer(c, ModelConfig(len(c.vocab), "gru", 8, 1, dtype="float64"), TrainConfig(steps=3, eval_every=3))
    tr.fit()
    assert all(p.dtype == np.float64 for p in tr.params.values())


def test_bad_configs_are_refused_by_name():
    with pytest.raises(CharrnnError, match="--cell"):
        ModelConfig(10, "transformer")
    with pytest.raises(CharrnnError, match="--hidden-size"):
        ModelConfig(10, "lstm", -1)
    with pytest.raises(CharrnnError, match="--val-fraction"):
        TrainConfig(val_fraction=1.0).check()
    with pytest.raises(CharrnnError, match="--top-p"):
        sample.check_options(1.0, 0, 1.5)
