"""charrnn.checkpoint: a saved model is plain data and loads back to the same logits."""


import numpy as np
import pytest
from helpers import TEN_NAMES_X3, small_trainer

from charrnn import checkpoint, model

# ---------------------------------------------------------------- round trip


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
