"""charrnn.train: the same seed gives the same model, losses and samples; float64 on request."""


import numpy as np
from helpers import TEN_NAMES_X3, small_trainer

from charrnn import data, sample
from charrnn.model import ModelConfig
from charrnn.train import TrainConfig, Trainer

# ---------------------------------------------------------------- determinism


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


def test_float64_is_selectable():
    c = data.make_corpus(TEN_NAMES_X3, "lines")
    tr = Trainer(c, ModelConfig(len(c.vocab), "gru", 8, 1, dtype="float64"), TrainConfig(steps=3, eval_every=3))
    tr.fit()
    assert all(p.dtype == np.float64 for p in tr.params.values())
