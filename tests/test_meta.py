"""The checkpoint's typed metadata (charrnn.checkpoint.Meta and friends), the training
bookkeeping that fills it (Plateau), and the batches (data.Batches)."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from charrnn import checkpoint, data
from charrnn.checkpoint import Meta, MetaError, Progress, parse
from charrnn.config import Mode, ModelConfig, Objective, TrainConfig
from charrnn.errors import OptionError
from charrnn.trainer import Plateau


def test_meta_round_trips_through_json_types():
    m = Meta(mode=Mode.LINES, source="names.txt", best_val_loss=1.5, progress=Progress(step=7, rng={"a": 1}),
             train=TrainConfig(seq_len=20))
    back = parse(Meta, asdict(m))
    assert back == m and back.mode is Mode.LINES and back.objective is Objective.NEXT


def test_missing_keys_take_defaults_and_unknown_keys_are_ignored():
    m = parse(Meta, {"mode": "lines", "progress": {"step": 3}, "from_the_future": [1, 2]})
    assert m.mode is Mode.LINES and m.progress.step == 3 and m.progress.epoch == 0 and m.train == TrainConfig()
    assert math.isnan(m.progress.plateau_best)  # an older file: best_val_loss stands in


@pytest.mark.parametrize("meta,problem", [
    ({"mode": "words"}, "unknown mode 'words'"),
    ({"objective": 3}, "unknown objective 3"),
    ({"progress": {"step": "7"}}, "progress.step has the wrong type"),
    ({"progress": {"step": True}}, "progress.step has the wrong type"),
    ({"progress": {"step": -1}}, "progress.step is -1"),
    ({"corpus": []}, "corpus is not a table"),
    ({"wall_time": "fast"}, "wall_time has the wrong type"),
    ({"train": {"seq_len": 2.5}}, "train.seq_len has the wrong type"),
])
def test_wrong_types_are_named(meta, problem):
    with pytest.raises(MetaError, match=problem.replace("(", r"\(")):
        parse(Meta, meta)


def test_a_train_config_no_option_could_give_is_refused():
    with pytest.raises(OptionError, match="--seq-len must be at least 1"):
        parse(Meta, {"train": {"seq_len": 0}})


def test_model_config_refuses_unknown_keys():
    with pytest.raises(MetaError, match="unknown model.heads"):
        parse(ModelConfig, {"vocab_size": 5, "heads": 4}, "model.", strict=True)
    with pytest.raises(MetaError, match="vocab_size"):
        parse(ModelConfig, {"cell": "gru"}, "model.", strict=True)


def test_plateau_keeps_best_weights_and_counts_only_scheduled_evaluations():
    p = Plateau()
    assert p.record(2.0, True, 0.5) and p.evals_since_best == 0
    assert not p.record(2.5, True, 0.5) and p.evals_since_best == 1 and p.lr_scale == 0.5
    assert p.record(1.5, False, 0.5)  # a better unscheduled one: new best weights ...
    assert p.evals_since_best == 1 and p.lr_scale == 0.5 and p.plateau_best == 2.0  # ... the schedule untouched
    assert p.record(1.4, True, 0.5) and p.evals_since_best == 0 and p.best == p.plateau_best == 1.4


def test_batches_are_a_fixed_function_of_epoch_and_position():
    text = "\n".join(f"name{i}" for i in range(50)) + "\n"
    c = data.make_corpus(text, "lines", val_fraction=0)
    a, b = data.Batches(c, 8, 16, seed=1), data.Batches(c, 8, 16, seed=1)
    assert a.per_epoch == 7
    x1 = a.get(0, 3).x
    a.get(1, 0)
    np.testing.assert_array_equal(a.get(0, 3).x, x1)
    np.testing.assert_array_equal(b.get(0, 3).x, x1)
    assert not np.array_equal(a.order(0), a.order(1))  # lines: a new order every epoch
    assert a.get(0, 0).chars == int(a.get(0, 0).mask.sum())
    s = data.make_corpus("abcdefgh" * 40, "stream", val_fraction=0)
    sb = data.Batches(s, 4, 8, seed=0)
    assert sb.get(0, 0).fresh and not sb.get(0, 1).fresh and sb.get(0, 1).chars == 32
    np.testing.assert_array_equal(sb.get(0, 2).x, sb.get(5, 2).x)  # stream: the same chunks every epoch


def test_batches_shrink_to_a_short_text_with_notes():
    s = data.make_corpus("abcdefghij" * 2, "stream", val_fraction=0)
    b = data.Batches(s, 32, 64, seed=0)
    assert (b.batch_size, b.seq_len) == (1, 19) and len(b.notes) == 2


def test_checkpoint_meta_is_typed_after_loading(tmp_path):
    from charrnn.trainer import Trainer

    c = data.make_corpus("anna\nbob\ncarl\ndora\n" * 5, "lines", val_fraction=0.2)
    tr = Trainer(c, ModelConfig(len(c.vocab), "gru", 4, 1), TrainConfig(steps=3, eval_every=3, batch_size=4))
    tr.fit()
    checkpoint.save(tmp_path / "m.npz", tr.checkpoint())
    m = checkpoint.load(tmp_path / "m.npz").meta
    assert m.mode is Mode.LINES and m.progress.step == 3 and m.train.batch_size == 4
    assert m.corpus.fingerprint == tr.fingerprint and m.best_val_loss == tr.best_val
