"""The in-order scorer (charrnn.score): every character's log-probability where it stands in
the text, against the model run plainly over each piece or line."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn import model, score
from charrnn.config import Mode, ModelConfig
from charrnn.data import encode_lines, line_starts
from charrnn.vocab import EOS, Vocab


def plain_log_probs(params, cfg, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(targets[t] | inputs[:t + 1]) from one forward pass over a single stream."""
    logits = model.forward(params, cfg, inputs[:, None].astype(np.int32)).logits[:, 0].astype(np.float64)
    top = logits.max(1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))  # log softmax
    return logp[np.arange(len(targets)), targets]


@pytest.fixture
def small():
    vocab = Vocab("abcdefgh")  # lines mode keeps no newline character: <EOS> ends a line
    cfg = ModelConfig(len(vocab), "lstm", 8, 2, dtype="float64")
    return vocab, cfg, model.init_params(cfg, np.random.default_rng(0))


@pytest.mark.parametrize("n,seq_len,batch", [(50, 8, 1), (50, 8, 4), (103, 16, 5), (9, 64, 64), (2, 4, 4)])
def test_stream_scores_every_character_after_the_first_in_order(small, n, seq_len, batch):
    vocab, cfg, params = small
    ids = np.random.default_rng(n).integers(2, len(vocab), n).astype(np.uint8)
    lp = score.log_probs(params, cfg, Mode.STREAM, ids, max_len=seq_len, batch_size=batch)
    assert lp.shape == (n,) and np.isnan(lp[0]) and np.isfinite(lp[1:]).all()
    B = max(1, min(batch, (n - 1) // seq_len))
    L = (n - 1) // B
    for b in range(B):  # piece b: inputs b*L .. (b+1)*L - 1, the last one running on to the end
        lo, hi = b * L, ((b + 1) * L if b < B - 1 else n - 1)
        want = plain_log_probs(params, cfg, ids[lo:hi], ids[lo + 1 : hi + 1])
        np.testing.assert_allclose(lp[lo + 1 : hi + 1], want, rtol=1e-9, atol=1e-12)


def test_lines_score_each_line_from_its_start(small):
    vocab, cfg, params = small
    ids, _ = encode_lines("abc\nhgfedcba\nd\nbadcafe\n", vocab)
    starts = line_starts(ids)
    lp = score.log_probs(params, cfg, Mode.LINES, ids, starts, max_len=64)
    assert np.isfinite(lp).all()
    for s, e in zip(starts, np.r_[starts[1:], len(ids)], strict=True):
        want = plain_log_probs(params, cfg, np.r_[EOS, ids[s : e - 1]], ids[s:e])
        np.testing.assert_allclose(lp[s:e], want, rtol=1e-9, atol=1e-12)


def test_lines_past_max_len_are_not_scored(small):
    vocab, cfg, params = small
    ids, _ = encode_lines("abcdefgh\nab\n", vocab)
    lp = score.log_probs(params, cfg, Mode.LINES, ids, line_starts(ids), max_len=3)
    assert np.isfinite(lp[:4]).all() and np.isnan(lp[4:9]).all() and np.isfinite(lp[9:]).all()


def test_evaluate_is_the_mean_loss_of_what_is_scored(small):
    vocab, cfg, params = small
    ids = np.random.default_rng(1).integers(2, len(vocab), 300).astype(np.uint8)
    lp = score.log_probs(params, cfg, Mode.STREAM, ids, max_len=16)
    assert score.evaluate(params, cfg, Mode.STREAM, ids, np.zeros(0, np.int64), 16) == pytest.approx(
        -np.nanmean(lp), rel=1e-12)
    ids, _ = encode_lines("abc\nde\nfgh\nhh\n" * 10, vocab)
    starts = line_starts(ids)
    full = score.log_probs(params, cfg, Mode.LINES, ids, starts)
    assert score.evaluate(params, cfg, Mode.LINES, ids, starts, max_chars=9) == pytest.approx(
        -full[: starts[3]].mean(), rel=1e-12)  # lines starting before character 9: the first three
