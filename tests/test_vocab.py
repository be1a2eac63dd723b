"""charrnn.vocab: building a vocabulary from character counts, encoding and decoding,
<UNK> for unseen characters, and the id dtype."""

import numpy as np
import pytest

from charrnn.vocab import UNK, Vocab, count_chars


def test_vocab_is_sorted_with_specials_first():
    v = Vocab.build(count_chars("banana"))
    assert v.chars == "abn"
    assert [v.token(i) for i in range(len(v))] == ["<UNK>", "<EOS>", "a", "b", "n"]
    ids, unk = v.encode("banana")
    assert ids.tolist() == [3, 2, 4, 2, 4, 2] and unk == 0
    assert ids.dtype == np.uint8


def test_unseen_characters_become_unk_and_are_counted():
    v = Vocab.build(count_chars("abc"))
    ids, unk = v.encode("abxcy")
    assert ids.tolist() == [2, 3, UNK, 4, UNK]
    assert unk == 2
    assert v.decode(ids) == "ab\ufffdc\ufffd"


def test_min_count_and_max_size():
    counts = count_chars("aaaabbbcc d")
    assert Vocab.build(counts, min_count=3).chars == "ab"
    assert Vocab.build(counts, max_size=2).chars == "ab"
    assert Vocab.build(counts, min_count=2, max_size=10).chars == "abc"


@pytest.mark.parametrize("text", ["Καλημέρα κόσμε", "你好，世界。你好", "emoji 🙂🚀 and ünïcödé", "\U0001f600" * 3])
def test_non_ascii_round_trip(text):
    v = Vocab.build(count_chars(text))
    ids, unk = v.encode(text)
    assert unk == 0
    assert v.decode(ids) == text


def test_large_vocabulary_uses_uint16():
    text = "".join(chr(0x4E00 + i) for i in range(1000))
    v = Vocab.build(count_chars(text))
    ids, _ = v.encode(text)
    assert ids.dtype == np.uint16 and len(v) == 1002
