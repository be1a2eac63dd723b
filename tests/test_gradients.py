"""Finite-difference checks of every hand-written backward pass, in float64."""

import numpy as np
import pytest
from helpers import numeric_grad, rel_error

from charrnn import model
from charrnn.model import ModelConfig

CASES = [
    ("rnn", "tanh", 1),
    ("rnn", "relu", 1),
    ("gru", "tanh", 1),
    ("lstm", "tanh", 1),
    ("rnn", "tanh", 2),
    ("gru", "tanh", 2),
    ("lstm", "tanh", 2),
]


def setup(cell, activation, layers, dropout=0.0, T=5, B=3, V=7, H=5, seed=0):
    cfg = ModelConfig(V, cell, H, layers, activation, dropout, "float64")
    rng = np.random.default_rng(seed)
    params = model.init_params(cfg, rng)
    for k in params:  # move away from the special initial values (identity, zero biases)
        params[k] += rng.standard_normal(params[k].shape) * 0.3
    x = rng.integers(0, V, size=(T, B))
    y = rng.integers(0, V, size=(T, B))
    mask = (rng.random((T, B)) > 0.2).astype(np.float64)
    return cfg, params, x, y, mask, rng


def check_params(cfg, params, x, y, mask=None, state=None, dropout_seed=None):
    def loss():
        drng = None if dropout_seed is None else np.random.default_rng(dropout_seed)
        logits = model.forward(params, cfg, x, state, drng).logits
        return model.cross_entropy(logits, y, mask, grad=False)[0]

    drng = None if dropout_seed is None else np.random.default_rng(dropout_seed)
    _, grads, _ = model.loss_and_grads(params, cfg, x, y, mask, state, drng)
    for name, p in params.items():
        err = rel_error(grads[name], numeric_grad(loss, p))
        assert err < 1e-6, f"gradient of {name} is off: relative error {err:.2e}"


@pytest.mark.parametrize("cell,activation,layers", CASES)
def test_param_gradients(cell, activation, layers):
    cfg, params, x, y, mask, _ = setup(cell, activation, layers)
    check_params(cfg, params, x, y, mask)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_dropout_gradients(cell):
    cfg, params, x, y, mask, _ = setup(cell, "tanh", 2, dropout=0.3)
    check_params(cfg, params, x, y, mask, dropout_seed=5)


@pytest.mark.parametrize("cell,activation,layers", CASES)
def test_carried_state_gradients(cell, activation, layers):
    """Stream mode starts a chunk from the state the previous chunk ended in."""
    cfg, params, x, y, _, rng = setup(cell, activation, layers)
    state = [tuple(rng.standard_normal((x.shape[1], cfg.hidden_size)) * 0.5 for _ in s)
             for s in model.zero_state(cfg, x.shape[1])]
    check_params(cfg, params, x, y, None, state)

    def loss():
        logits = model.forward(params, cfg, x, state).logits
        return model.cross_entropy(logits, y, None, grad=False)[0]

    cache = model.forward(params, cfg, x, state)
    logits = cache.logits
    _, dlogits, _ = model.cross_entropy(logits, y)
    _, dstate = model.backward(params, cfg, dlogits, cache)
    for l, (s, ds) in enumerate(zip(state, dstate, strict=True)):
        for k, (arr, darr) in enumerate(zip(s, ds, strict=True)):
            err = rel_error(darr, numeric_grad(loss, arr))
            assert err < 1e-6, f"gradient of the initial state, layer {l} part {k}, is off: {err:.2e}"


def test_output_layer_gradient_alone():
    """The softmax cross-entropy gradient against finite differences on the logits."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 3, 6))
    y = rng.integers(0, 6, size=(4, 3))
    mask = (rng.random((4, 3)) > 0.3).astype(np.float64)
    _, d, _ = model.cross_entropy(logits.copy(), y, mask)
    num = numeric_grad(lambda: model.cross_entropy(logits, y, mask, grad=False)[0], logits)
    assert rel_error(d, num) < 1e-6


@pytest.mark.parametrize("n", [9, 3000])
def test_scatter_rows_matches_dense_product(n):
    """Both ways of summing the rows of a lookup (dense one-hot and sort + reduceat)."""
    rng = np.random.default_rng(2)
    ids = rng.integers(0, n, size=500)
    rows = rng.standard_normal((500, 4))
    onehot = np.eye(n)[ids]  # (500, n)
    np.testing.assert_allclose(model.scatter_rows(ids, rows, n), onehot.T @ rows, atol=1e-12)
