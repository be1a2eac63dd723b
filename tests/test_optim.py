"""charrnn.optim: gradient clipping and the optimizers."""

import numpy as np
import pytest

from charrnn import optim


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
