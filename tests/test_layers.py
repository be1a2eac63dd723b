"""The layer stack (charrnn.model.Layer): parameters derived from the specs, the named forward
result, and a right-to-left layer and a layer of another width slotting into the same
forward/backward pair — checked by finite differences in float64."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import numeric_grad, rel_error

from charrnn import cells, model
from charrnn.config import ModelConfig
from charrnn.model import Layer

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def mixed_stack(cell: str, activation: str, V: int) -> list[Layer]:
    """Left to right (H 5), then right to left and narrower (H 4), then left to right again."""
    return [Layer(0, cell, V, 5, activation), Layer(1, cell, 5, 4, activation, reverse=True),
            Layer(2, cell, 4, 4, activation)]


def test_reversed_layers_read_each_row_from_its_own_end():
    """Rows of other lengths (padded lines): a right-to-left layer starts each row at its last real
    step, so what stands in the padding never reaches the real positions."""
    V, T = 6, 7
    rev_layer = Layer(0, "gru", V, 4, reverse=True)
    params = model.init_params(ModelConfig(V, "gru", 4, 1, dtype="float64"), np.random.default_rng(3))
    params.update({rev: params[fwd] for fwd, rev in zip(Layer(0, "gru", V, 4).names(), rev_layer.names(), strict=True)})
    x = np.random.default_rng(4).integers(0, V, (T, 3))
    lengths = np.array([7, 4, 1])
    h0 = (np.zeros((3, 4)),)
    hs, _, run = model.layer_forward(rev_layer, params, x, h0, lengths=lengths)
    for b, n in enumerate(lengths):
        alone, _, _ = model.layer_forward(rev_layer, params, x[:n, b : b + 1], (np.zeros((1, 4)),))
        np.testing.assert_allclose(hs[:n, b], alone[:, 0], err_msg=f"row {b}")
    x2 = x.copy()
    x2[5:, 1] = (x2[5:, 1] + 1) % V  # change row 1's padding
    hs2, _, _ = model.layer_forward(rev_layer, params, x2, h0, lengths=lengths)
    np.testing.assert_array_equal(hs2[:4, 1], hs[:4, 1])


def test_specs_give_names_shapes_and_counts():
    cfg = ModelConfig(11, "lstm", 6, 3)
    stack = model.layer_specs(cfg)
    assert [(layer.n_in, layer.hidden, layer.lookup) for layer in stack] == [
        (11, 6, True), (6, 6, False), (6, 6, False)]
    shapes = model.param_shapes(cfg)
    assert shapes["W_x0"] == (11, 24) and shapes["W_h2"] == (6, 24) and shapes["b1"] == (24,)
    assert list(shapes)[-2:] == ["W_y", "b_y"] and shapes["W_y"] == (6, 11)
    assert sum(int(np.prod(s)) for s in shapes.values()) == model.textbook_param_count(cfg)
    assert set(model.init_params(cfg, np.random.default_rng(0))) == set(shapes)


def test_gate_order_is_the_one_used_by_every_slice():
    a = np.arange(12.0).reshape(1, 12)
    i, f, o, g = cells.split_gates(a, "lstm")
    assert cells.GATE_ORDER["lstm"] == ("i", "f", "o", "g") and f.tolist() == [[3.0, 4.0, 5.0]]
    assert cells.gate_index("gru", "n") == 2
    with pytest.raises(ValueError, match="no gate 'z'"):
        cells.gate_index("lstm", "z")
    p = model.init_params(ModelConfig(5, "lstm", 3, 1), np.random.default_rng(0))
    assert cells.split_gates(p["b0"], "lstm")[cells.gate_index("lstm", "f")].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("cell,activation", CELLS)
def test_forward_names_hidden_states_cell_states_and_gates(cell, activation):
    cfg = ModelConfig(7, cell, 5, 2, activation, dtype="float64")
    params = model.init_params(cfg, np.random.default_rng(1))
    x = np.random.default_rng(2).integers(0, 7, (6, 3))
    fwd = model.forward(params, cfg, x)
    assert fwd.logits.shape == (6, 3, 7) and len(fwd.layers) == 2
    for run, final in zip(fwd.layers, fwd.state, strict=True):
        assert run.hs.shape == (6, 3, 5)
        np.testing.assert_array_equal(run.hs[-1], final[0])  # the state after the last step is h_T
    np.testing.assert_array_equal(fwd.top, fwd.layers[-1].hs)  # no dropout: the output layer reads h
    top = fwd.layers[-1]
    if cell == "lstm":
        np.testing.assert_array_equal(top.cs[-1], fwd.state[-1][1])
        o = top.gate("o")
        np.testing.assert_allclose(top.hs, o * np.tanh(top.cs))  # h = o * tanh(c), from the named parts
        assert ((o > 0) & (o < 1)).all()
    elif cell == "gru":
        u, n = top.gate("u"), top.gate("n")
        h_prev = np.concatenate([np.zeros((1, 3, 5)), top.hs[:-1]])
        np.testing.assert_allclose(top.hs, (1 - u) * n + u * h_prev)
    else:
        with pytest.raises(ValueError, match="no gates"):
            top.gate("h")


@pytest.mark.parametrize("cell,activation", CELLS)
def test_reversed_layer_reads_right_to_left(cell, activation):
    """A reversed layer equals the same layer run over the flipped sequence, flipped back."""
    V = 6
    fwd_layer, rev_layer = Layer(0, cell, V, 4, activation), Layer(0, cell, V, 4, activation, reverse=True)
    params = model.init_params(ModelConfig(V, cell, 4, 1, activation, dtype="float64"), np.random.default_rng(3))
    params.update({rev: params[fwd] for fwd, rev in zip(fwd_layer.names(), rev_layer.names(), strict=True)})
    x = np.random.default_rng(4).integers(0, V, (7, 2))
    h0 = tuple(np.zeros((2, 4)) for _ in range(fwd_layer.state_size))
    hs_rev, _, run = model.layer_forward(rev_layer, params, x, h0)
    hs_flip, _, _ = model.layer_forward(fwd_layer, params, x[::-1], h0)
    np.testing.assert_allclose(hs_rev, hs_flip[::-1])
    np.testing.assert_allclose(run.hs, hs_rev)  # run.hs is in reading order too
    # the output at t = 0 depends on the whole sequence; at the end, on the last character only
    x2 = x.copy()
    x2[3] = (x2[3] + 1) % V
    hs2, _, _ = model.layer_forward(rev_layer, params, x2, h0)
    assert not np.allclose(hs2[0], hs_rev[0]) and np.allclose(hs2[4:], hs_rev[4:])


@pytest.mark.parametrize("cell,activation", CELLS)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradients_through_a_mixed_stack(cell, activation, dropout):
    """Every parameter's gradient, and the initial state's, through left-to-right, right-to-left
    and narrower layers, against finite differences."""
    V, T, B = 6, 5, 3
    stack = mixed_stack(cell, activation, V)
    cfg = ModelConfig(V, cell, 5, 3, activation, dropout, "float64")
    rng = np.random.default_rng(5)
    params = model.init_params(cfg, rng, stack)
    for k in params:
        params[k] += rng.standard_normal(params[k].shape) * 0.3
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    mask = (rng.random((T, B)) > 0.2).astype(np.float64)
    state = [tuple(rng.standard_normal((B, layer.hidden)) * 0.5 for _ in range(layer.state_size)) for layer in stack]

    def loss() -> float:
        drng = np.random.default_rng(9) if dropout else None
        fwd = model.forward(params, cfg, x, state, drng, stack)
        return model.cross_entropy(fwd.logits, y, mask, grad=False)[0]

    fwd = model.forward(params, cfg, x, state, np.random.default_rng(9) if dropout else None, stack)
    _, dlogits, _ = model.cross_entropy(fwd.logits, y, mask)
    grads, dstate = model.backward(params, cfg, dlogits, fwd)
    assert set(grads) == set(params) == set(model.param_shapes(cfg, stack))
    for name, p in params.items():
        err = rel_error(grads[name], numeric_grad(loss, p))
        assert err < 1e-6, f"gradient of {name} is off: relative error {err:.2e}"
    for l, layer_state in enumerate(state):
        for k, s in enumerate(layer_state):
            err = rel_error(dstate[l][k], numeric_grad(loss, s))
            assert err < 1e-6, f"gradient of layer {l}'s initial state {k} is off: {err:.2e}"


def test_stepper_refuses_a_right_to_left_layer(monkeypatch):
    cfg = ModelConfig(5, "gru", 3, 1)
    params = model.init_params(cfg, np.random.default_rng(0))
    monkeypatch.setattr(model, "layer_specs", lambda cfg: [Layer(0, "gru", 5, 3, reverse=True)])
    with pytest.raises(ValueError, match="right-to-left"):
        model.Stepper(params, cfg, model.zero_state(cfg, 1))


def test_token_nll_is_the_per_position_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 3, 9)).astype(np.float32)
    y = rng.integers(0, 9, (4, 3))
    kept = logits.copy()
    nll = model.token_nll(logits, y)
    np.testing.assert_array_equal(logits, kept)  # not overwritten
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(nll, -np.log(np.take_along_axis(p, y[..., None], 2)[..., 0]), rtol=1e-5)
    assert model.cross_entropy(logits, y, grad=False)[0] == pytest.approx(float(nll.mean()), rel=1e-6)
