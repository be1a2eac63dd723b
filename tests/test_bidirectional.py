"""Bidirectional models: the two directions, the masked-character objective, and their gradients
(float64 finite differences)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import numeric_grad, rel_error, run

from charrnn import checkpoint, data, model
from charrnn.config import Mode, ModelConfig
from charrnn.errors import OptionError

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def lines_masked_batch(V: int, rng: np.random.Generator, rate: float = 0.3, every: bool = False
                       ) -> data.MaskedBatch:
    """Three lines of different lengths as a lines batch, with characters hidden."""
    lines = [rng.integers(2, V, n) for n in (5, 2, 4)]
    ids = np.concatenate([np.r_[line, 1] for line in lines]).astype(np.int32)  # each line ends in <EOS>
    starts = data.line_starts(ids)
    batch = data.Batch(*data.lines_batch(ids, starts, np.arange(3), 64))
    return data.masked_batch(batch, Mode.LINES, rate, rng, mask_id=V, every=every)


def test_specs_of_a_bidirectional_model():
    cfg = ModelConfig(9, "gru", 4, 2, bidirectional=True)
    stack = model.layer_specs(cfg)
    assert [(layer.index, layer.reverse, layer.n_in) for layer in stack] == [
        (0, False, 10), (0, True, 10), (1, False, 8), (1, True, 8)]  # V + <MASK>; then 2H
    shapes = model.param_shapes(cfg)
    assert shapes["W_x0_rev"] == (10, 12) and shapes["W_y"] == (8, 9)
    assert sum(int(np.prod(s)) for s in shapes.values()) == model.textbook_param_count(cfg)


def test_specs_of_a_neighbors_model_keep_the_directions_apart():
    cfg = ModelConfig(9, "gru", 4, 3, bidirectional=True, objective="neighbors")
    stack = model.layer_specs(cfg)
    assert [(layer.index, layer.reverse, layer.n_in, layer.separate) for layer in stack] == [
        (0, False, 10, False), (0, True, 10, False), (1, False, 4, True), (1, True, 4, True),
        (2, False, 4, True), (2, True, 4, True)]  # above layer 0 each reads its own direction: H wide
    shapes = model.param_shapes(cfg)
    assert shapes["W_x1_rev"] == (4, 12) and shapes["W_y"] == (8, 9)
    assert sum(int(np.prod(s)) for s in shapes.values()) == model.textbook_param_count(cfg)


def test_specs_and_counts_of_a_head():
    cfg = ModelConfig(9, "lstm", 4, 2, bidirectional=True, objective="neighbors", head=6)
    shapes = model.param_shapes(cfg)
    assert shapes["W_head"] == (8, 6) and shapes["b_head"] == (6,) and shapes["W_y"] == (6, 9)
    assert sum(int(np.prod(s)) for s in shapes.values()) == model.textbook_param_count(cfg)
    with pytest.raises(OptionError, match="--head is for bidirectional models"):
        ModelConfig(9, head=6)
    with pytest.raises(OptionError, match="--head must be at least 0"):
        ModelConfig(9, bidirectional=True, head=-1)
    assert "head" not in ModelConfig(9, bidirectional=True, objective="neighbors").to_dict()  # format 3 as before


def test_the_shift_and_its_transpose():
    rng = np.random.default_rng(0)
    top, d = rng.standard_normal((5, 2, 6)), rng.standard_normal((5, 2, 6))
    s = model.shift(top)
    np.testing.assert_array_equal(s[2, :, :3], top[1, :, :3])  # h→ from the step before
    np.testing.assert_array_equal(s[2, :, 3:], top[3, :, 3:])  # h← from the step after
    assert not s[0, :, :3].any() and not s[-1, :, 3:].any()  # nothing past either end
    assert np.isclose((s * d).sum(), (top * model.unshift(d)).sum())  # <shift(a), d> = <a, unshift(d)>


def test_neighbors_logits_read_the_states_beside_each_position():
    """logits[t] = [h→_{t-1} ; h←_{t+1}] W_y + b_y from the top layers' own outputs, written out."""
    V, rng = 7, np.random.default_rng(1)
    cfg = ModelConfig(V, "gru", 5, 2, bidirectional=True, objective="neighbors", dtype="float64")
    params = model.init_params(cfg, rng)
    params["b_y"] += rng.standard_normal(V)
    x = rng.integers(0, V + 1, (6, 2))
    fwd = model.forward(params, cfg, x)
    right, left = fwd.layers[2].hs, fwd.layers[3].hs  # level 1: left-to-right, right-to-left
    for t in range(6):
        a = right[t - 1] if t > 0 else np.zeros((2, 5))
        b = left[t + 1] if t < 5 else np.zeros((2, 5))
        want = np.concatenate([a, b], axis=1) @ params["W_y"] + params["b_y"]
        np.testing.assert_allclose(fwd.logits[t], want, rtol=1e-12)


def test_a_head_sits_between_the_shifted_states_and_the_output():
    """logits[t] = tanh([h→_{t-1} ; h←_{t+1}] W_head + b_head) W_y + b_y, written out."""
    V, rng = 7, np.random.default_rng(2)
    cfg = ModelConfig(V, "lstm", 5, 1, bidirectional=True, objective="neighbors", dtype="float64", head=3)
    params = model.init_params(cfg, rng)
    params["b_head"] += rng.standard_normal(3)
    x = rng.integers(0, V + 1, (6, 2))
    fwd = model.forward(params, cfg, x)
    right, left = fwd.layers[0].hs, fwd.layers[1].hs
    for t in range(6):
        a = right[t - 1] if t > 0 else np.zeros((2, 5))
        b = left[t + 1] if t < 5 else np.zeros((2, 5))
        z = np.tanh(np.concatenate([a, b], axis=1) @ params["W_head"] + params["b_head"])
        np.testing.assert_allclose(fwd.logits[t], z @ params["W_y"] + params["b_y"], rtol=1e-12)


@pytest.mark.parametrize("objective,head", [("masked", 0), ("neighbors", 0), ("neighbors", 3), ("masked", 3)])
@pytest.mark.parametrize("cell,activation", CELLS)
def test_masked_loss_gradients_two_layers_with_dropout(cell, activation, objective, head):
    V, rng = 7, np.random.default_rng(0)
    cfg = ModelConfig(V, cell, 4, 2, activation, dropout=0.25, dtype="float64", bidirectional=True,
                      objective=objective, head=head)
    params = model.init_params(cfg, rng)
    for k in params:
        params[k] += rng.standard_normal(params[k].shape) * 0.3
    mb = lines_masked_batch(V, rng, every=objective == "neighbors")
    if objective == "masked":
        assert mb.weights.sum() >= 3 and (mb.x[mb.weights > 0] == V).all()
    else:  # every character of every line, hidden or not; the end markers never
        assert mb.weights.sum() == 5 + 2 + 4 and (mb.x[mb.weights > 0] != V).any()

    def loss() -> float:
        fwd = model.forward(params, cfg, mb.x, None, np.random.default_rng(5), lengths=mb.lengths)
        return model.cross_entropy(fwd.logits, mb.y, mb.weights, grad=False)[0]

    _, grads, _ = model.loss_and_grads(params, cfg, mb.x, mb.y, mb.weights, None, np.random.default_rng(5),
                                       lengths=mb.lengths)
    assert set(grads) == set(params)
    for name, p in params.items():
        err = rel_error(grads[name], numeric_grad(loss, p))
        assert err < 1e-6, f"gradient of {name} is off: relative error {err:.2e}"


@pytest.mark.parametrize("cell,activation", CELLS)
def test_backward_direction_mirrors_a_forward_model_on_the_reversed_text(cell, activation):
    V = 6
    bi = ModelConfig(V, cell, 5, 1, activation, dtype="float64", bidirectional=True)
    fw = ModelConfig(V + 1, cell, 5, 1, activation, dtype="float64")  # the same input rows, <MASK> included
    p = model.init_params(bi, np.random.default_rng(1))
    q = {"W_x0": p["W_x0_rev"], "W_h0": p["W_h0_rev"], "b0": p["b0_rev"]}
    x = np.random.default_rng(2).integers(0, V + 1, (9, 2))
    got = model.forward(p, bi, x).layers[1].hs  # the right-to-left layer, in reading order
    q.update(W_y=np.zeros((5, V + 1)), b_y=np.zeros(V + 1))
    want = model.forward(q, fw, x[::-1]).layers[0].hs[::-1]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("layers,head", [(1, 0), (2, 0), (3, 0), (1, 5), (2, 5)])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_neighbors_never_see_the_character_they_predict(cell, layers, head):
    """The prediction at every position t does not depend on the character at t, hidden or not, and
    depends on the characters at t - 1 and t + 1."""
    V, T, rng = 8, 10, np.random.default_rng(3)
    cfg = ModelConfig(V, cell, 6, layers, bidirectional=True, objective="neighbors", dtype="float64", head=head)
    params = model.init_params(cfg, rng)
    x = rng.integers(2, V, (T, 3))
    base = model.forward(params, cfg, x).logits
    for t in range(T):
        x2 = x.copy()
        x2[t] = (x2[t] - 2 + 1) % (V - 2) + 2
        x2[t, 0] = V  # <MASK> in one row
        got = model.forward(params, cfg, x2).logits
        np.testing.assert_array_equal(got[t], base[t])
        for s in (t - 1, t + 1):
            if 0 <= s < T:
                assert not np.allclose(got[s], base[s])


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_neighbors_in_padded_rows_see_neither_their_character_nor_the_padding(cell, layers):
    """Rows of different lengths in one batch: every real position, the last included, predicts as
    the row alone does (the right-to-left stack reaches the padding only after reading the row)."""
    V, rng = 8, np.random.default_rng(5)
    cfg = ModelConfig(V, cell, 6, layers, bidirectional=True, objective="neighbors", dtype="float64")
    params = model.init_params(cfg, rng)
    lengths = np.array([9, 4, 6])
    x = rng.integers(2, V, (9, 3))
    padded = model.forward(params, cfg, x, lengths=lengths).logits
    for b, n in enumerate(lengths):
        alone = model.forward(params, cfg, x[:n, b : b + 1]).logits[:, 0]
        np.testing.assert_allclose(padded[:n, b], alone, rtol=1e-10, atol=1e-12)
        x2 = x.copy()
        x2[n - 1, b] = V  # the row's last character, hidden: its own prediction stays
        np.testing.assert_array_equal(model.forward(params, cfg, x2, lengths=lengths).logits[n - 1, b],
                                      padded[n - 1, b])


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_no_leak_of_the_hidden_character(cell, layers):
    """The prediction at a hidden position does not depend on the character hidden there, and does
    depend on characters on both sides."""
    V, rng = 8, np.random.default_rng(3)
    cfg = ModelConfig(V, cell, 6, layers, bidirectional=True, dtype="float64")
    params = model.init_params(cfg, rng)
    ids = rng.integers(2, V, (12, 4))
    batch = data.Batch(ids, ids, None)
    a = data.masked_batch(batch, Mode.STREAM, 0.2, np.random.default_rng(7), mask_id=V)
    other = np.where(a.weights > 0, (ids - 2 + 1) % (V - 2) + 2, ids)  # every hidden character changed
    b = data.masked_batch(data.Batch(other, other, None), Mode.STREAM, 0.2, np.random.default_rng(7), mask_id=V)
    np.testing.assert_array_equal(a.x, b.x)
    la, lb = model.forward(params, cfg, a.x).logits, model.forward(params, cfg, b.x).logits
    np.testing.assert_array_equal(la, lb)
    t, col = np.argwhere(a.weights > 0)[0]
    for s in (t - 1, t + 1):  # a visible neighbour on either side changes the prediction
        if 0 <= s < 12 and a.weights[s, col] == 0:
            x2 = a.x.copy()
            x2[s, col] = (x2[s, col] - 2 + 1) % (V - 2) + 2
            assert not np.allclose(model.forward(params, cfg, x2).logits[t, col], la[t, col])


def test_hidden_spans_follow_the_rate_and_stay_on_candidates():
    rng = np.random.default_rng(0)
    candidates = np.ones((200, 50), dtype=bool)
    candidates[:, 0] = False  # a row with nothing to hide
    candidates[:3] = False
    hidden = data.hide(candidates, 0.15, rng)
    assert not (hidden & ~candidates).any()
    assert 0.12 < hidden[:, 1:].mean() / candidates[:, 1:].mean() < 0.18
    runs = np.diff(np.r_[0, hidden[:, 5].astype(int), 0])
    assert max(np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)) <= 6  # spans of up to 3 may touch
    one = np.zeros((10, 3), dtype=bool)
    one[4, :] = True
    assert (data.hide(one, 0.01, rng).sum(axis=0) == 1).all()  # at least one per row


def test_lines_are_read_between_two_end_markers():
    mb = lines_masked_batch(7, np.random.default_rng(4))
    assert mb.lengths.tolist() == [7, 4, 6]
    for b, n in enumerate(mb.lengths):
        assert mb.y[0, b] == 1 and mb.y[n - 1, b] == 1  # <EOS> at both ends, never hidden
        assert mb.weights[0, b] == 0 and mb.weights[n - 1 :, b].sum() == 0


def test_a_bidirectional_line_model_gets_less_dropout_by_default(tmp_path, capsys, names_x4_file):
    """It learns only from its hidden characters: dropout 0.1 filled names ~3 points better than the
    forward models' 0.3 in side-by-side runs (benchmarks/README.md)."""
    for extra, want in (([], 0.3), (["--bidirectional"], 0.1)):
        out = tmp_path / f"m{len(extra)}.npz"
        code, _, err = run(capsys, "train", names_x4_file, "--out", out, "--hidden-size", 8, "--steps", 1, "-q", *extra)
        assert code == 0, err
        assert checkpoint.load(out).cfg.dropout == want
