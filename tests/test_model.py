"""charrnn.model and its cells: parameter counts and initialisation, the loss of a fresh
model, that each cell can learn, and the one-step Stepper that sampling uses against the
training forward pass.

The backward passes are checked against finite differences in test_gradients.py."""

import math

import numpy as np
import pytest

from charrnn import data, model
from charrnn.model import ModelConfig
from charrnn.trainer import TrainConfig, Trainer

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


# ---------------------------------------------------------------- parameters


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


# ---------------------------------------------------------------- loss and learning


@pytest.mark.parametrize("cell,activation", CELLS)
def test_fresh_model_loss_is_near_uniform(cell, activation):
    V = 65
    cfg = ModelConfig(V, cell, 64, 2, activation)
    p = model.init_params(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (32, 16)), rng.integers(0, V, (32, 16))
    logits = model.forward(p, cfg, x).logits
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
    x, y = tr.batches.layout.batch(c.train, 0)
    fwd = model.forward(tr.params, cfg, x, state)
    logits, state = fwd.logits, fwd.state
    loss = model.cross_entropy(logits, y, grad=False)[0]
    assert loss < 0.05, f"{cell}/{activation} only got to {loss:.3f} nats/char"


# ---------------------------------------------------------------- stepping one character at a time


@pytest.mark.parametrize("cell,activation", CELLS)
def test_sampling_steps_match_the_training_forward(cell, activation):
    """model.Stepper (sampling, one character at a time) against model.forward over the
    whole sequence: the same logits at every step, two layers, float64."""
    cfg = ModelConfig(vocab_size=9, cell=cell, hidden_size=6, layers=2, activation=activation, dtype="float64")
    rng = np.random.default_rng(5)
    params = model.init_params(cfg, rng)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}  # not the init pattern
    x = rng.integers(0, 9, (7, 3))
    fwd = model.forward(params, cfg, x)
    logits, final = fwd.logits, fwd.state
    step = model.Stepper(params, cfg, model.zero_state(cfg, 3), banned=[0])
    for t in range(7):
        z = step(x[t])
        assert np.isneginf(z[:, 0]).all()
        np.testing.assert_allclose(z[:, 1:], logits[t, :, 1:], rtol=1e-12, atol=1e-12)
    for a, b in zip(step.state, final, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


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


@pytest.mark.parametrize("cell,activation", CELLS)
def test_stepper_leaves_the_state_it_was_given_alone(cell, activation):
    """The Stepper writes into arrays of its own (made once, reused every other step): the
    state a caller hands it, its arrays and its list, stay as they were."""
    cfg = ModelConfig(vocab_size=9, cell=cell, hidden_size=6, layers=2, activation=activation)
    params = model.init_params(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    state = [tuple(rng.standard_normal(s.shape).astype(s.dtype) for s in layer) for layer in model.zero_state(cfg, 3)]
    before = [tuple(s.copy() for s in layer) for layer in state]
    listed = list(state)
    step = model.Stepper(params, cfg, state)
    for t in range(5):
        step(rng.integers(0, 9, 3 if t <= 2 else 2))
        if t == 2:
            step.keep(np.array([True, False, True]))
    assert len(state) == len(listed) and all(a is b for a, b in zip(state, listed, strict=True))
    for layer, was in zip(state, before, strict=True):
        for s, w in zip(layer, was, strict=True):
            np.testing.assert_array_equal(s, w)
    assert all(len(s) == 2 for layer in step.state for s in layer)


@pytest.mark.parametrize("rows", [1, 3])  # one stream fills its input row without a lookup
@pytest.mark.parametrize("cell,activation", CELLS)
def test_sampling_steps_are_the_forward_pass_exactly(cell, activation, rows):
    """In float32 too, a Stepper step is bit for bit `forward` over one time step from the same
    state: sampled text does not depend on which of the two computed it."""
    cfg = ModelConfig(vocab_size=9, cell=cell, hidden_size=12, layers=2, activation=activation)
    rng = np.random.default_rng(5)
    params = {k: v + np.float32(0.1) * rng.standard_normal(v.shape, np.float32)
              for k, v in model.init_params(cfg, rng).items()}
    x = rng.integers(0, 9, (6, rows))
    state = model.zero_state(cfg, rows)
    step = model.Stepper(params, cfg, state)
    for t in range(6):
        fwd = model.forward(params, cfg, x[t : t + 1], state)
        np.testing.assert_array_equal(step(x[t]), fwd.logits[0])
        state = fwd.state
