"""The WordPiece tokenizer against transformers' tokenizer for the same files: the vocabulary, ids, token
types and attention masks, on fixed sentences and on hypothesis-drawn Unicode text."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.text import BertTokenizer, split_words, wordpiece
from minilm import MODEL_DIR, SENTENCES, requires_minilm

pytestmark = requires_minilm


@pytest.fixture(scope="module")
def tokenizers():
    transformers = pytest.importorskip("transformers", reason="transformers' tokenizer is the oracle")
    return BertTokenizer.from_pretrained(MODEL_DIR), transformers.AutoTokenizer.from_pretrained(str(MODEL_DIR))


def test_vocabulary_and_special_ids_match(tokenizers):
    ours, ref = tokenizers
    assert ours.vocab == ref.get_vocab()
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id, ours.unk_token_id) == (
        ref.cls_token_id, ref.sep_token_id, ref.pad_token_id, ref.unk_token_id)


@pytest.mark.parametrize("text", SENTENCES + [
    "a [MASK] b [mask] [CLS][SEP]", "Σσς ΣΑΣ", "x\u2028y\u00a0z\u3000w", "a\x85b\x00c\ufffdd\u200be",
    "ǅ ﬁ Ⅻ ½ ①", "don't stop-believing... #1 @home <b>", "x" * 101 + " " + "y" * 100, "\t\n  \r ",
])
def test_ids_equal_transformers_on_one_text(tokenizers, text):
    ours, ref = tokenizers
    expected = ref(text, truncation=True)
    got = ours(text, truncation=True)
    assert got == {k: expected[k] for k in got}
    assert ours.tokenize(text) == ref.tokenize(text)


@pytest.mark.parametrize("padding, max_length", [(True, None), (True, 12), ("max_length", 20), ("max_length", 9)])
def test_batches_truncate_and_pad_as_transformers(tokenizers, padding, max_length):
    ours, ref = tokenizers
    kwargs = dict(padding=padding, truncation=True, max_length=max_length, return_tensors="np")
    got, expected = ours(SENTENCES, **kwargs), ref(SENTENCES, **kwargs)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert got[key].dtype == np.int64
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


# characters from every part of the tokenizer's rules: letters with accents, CJK, punctuation, symbols,
# emoji, controls, unusual spaces, combining marks, and anything else
_interesting = st.sampled_from(list("aZé ñÅçØß\u0301\u0308北京東ひカ한,.!?-'\"()[]$%&+<=>^`|~€½😀👍\u200d\t\n\x00\x07"
                                    "\u00a0\u2028\u3000\ufffdİΣσςǅﬁ") + ["[MASK]", "[CLS]", "##", " "])
texts = st.lists(st.one_of(_interesting, st.characters(codec="utf-8")), max_size=30).map("".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(texts, min_size=1, max_size=4))
def test_ids_equal_transformers_on_drawn_text(tokenizers, batch):
    ours, ref = tokenizers
    got, expected = ours(batch, padding=True), ref(batch, padding=True)
    assert got["input_ids"] == expected["input_ids"]
    assert got["attention_mask"] == expected["attention_mask"]


def test_wordpiece_is_greedy_longest_match_first():
    vocab = {"un", "##aff", "##able", "##a", "aff", "[UNK]"}
    assert wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]
    assert wordpiece("unaffx", vocab) == ["[UNK]"]
    assert wordpiece("a" * 101, vocab) == ["[UNK]"]
    assert split_words("hi,there  you!") == ["hi", ",", "there", "you", "!"]


def test_bad_input_and_missing_files_raise(tokenizers, tmp_path):
    ours, _ = tokenizers
    with pytest.raises(TypeError, match=r"text\[1\] must be a str"):
        ours(["fine", None])
    with pytest.raises(ValueError, match="padding=True"):
        ours(["a", "a b c"], return_tensors="np")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer_config.json: not valid JSON"):
        BertTokenizer.from_pretrained(tmp_path)
