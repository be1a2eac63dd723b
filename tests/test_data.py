"""charrnn.data: reading a text file, choosing lines or stream mode, the train/validation
split of each mode and the batches it makes.

Bad and odd text files as the CLI meets them are in test_text_input.py."""

import numpy as np

from charrnn import data
from charrnn.vocab import EOS

# ---------------------------------------------------------------- reading text


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
