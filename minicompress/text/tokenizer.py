"""BERT's tokenizer: text -> token ids and attention masks, equal to Hugging Face transformers'
`BertTokenizer` (the `tokenizers` library's BertNormalizer + BertPreTokenizer + WordPiece + the
[CLS] A [SEP] template) for the same vocab.txt and tokenizer_config.json.

The steps, in the order the `tokenizers` library runs them:

    0. special tokens      exact occurrences of [CLS], [SEP], [PAD], [MASK], [UNK] in the raw text are kept whole
                           (leftmost, longest first); the text between them goes through steps 1-5
    1. clean               drop NUL, U+FFFD and control characters (Cc, Cf, Co, except \\t \\n \\r);
                           every whitespace character (Unicode White_Space) becomes a space
    2. CJK                 a space each side of every CJK ideograph, so each one is a word
    3. accents             (if strip_accents, which defaults to do_lower_case) NFD, then drop the
                           non-spacing marks (category Mn): "café" -> "cafe"
    4. lower case          (if do_lower_case) character by character: "ΣΑΣ" -> "σασ" (no final-sigma rule,
                           unlike str.lower())
    5. words               split on whitespace; every punctuation character (ASCII punctuation or a category
                           P* character) is a word of its own
    6. WordPiece           each word, greedily: the longest vocabulary entry that starts the word, then the
                           longest "##"-prefixed entry that continues it, ...; a word with a piece not in the
                           vocabulary, or longer than 100 characters, becomes one [UNK]
    7. template            [CLS] tokens [SEP]; truncation keeps the first max_length - 2 tokens; padding
                           appends [PAD] (id 0) with attention mask 0

    >>> tokenizer = BertTokenizer.from_pretrained("path/to/model")
    >>> tokenizer(["Hello, world!"])["input_ids"]
    [[101, 7592, 1010, 2088, 999, 102]]
"""
import json
import os
import re
import unicodedata

import numpy as np

from . import unicode_tables as tables

__all__ = ["BertTokenizer", "wordpiece", "normalize", "split_words"]

# Unicode White_Space (what Rust's char::is_whitespace tests), less the controls step 1 drops anyway
_WHITESPACE = frozenset(" \t\n\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                        "\u2028\u2029\u202f\u205f\u3000")
# the CJK Unified Ideographs blocks BERT's original tokenizer treats as one character per word; `tokenizers`
# starts the sixth at 0x2B920 where the original has 0x2B820, and that is the oracle followed here
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
MAX_CHARS_PER_WORD = 100
_NOT_PUNCTUATION = tables.code_points(tables.NOT_PUNCTUATION)
_EXTRA_PUNCTUATION = tables.code_points(tables.EXTRA_PUNCTUATION)
_NOT_MARK = tables.code_points(tables.NOT_NONSPACING_MARK)
_EXTRA_MARK = tables.code_points(tables.EXTRA_NONSPACING_MARK)
_NOT_CONTROL = tables.code_points(tables.NOT_CONTROL)


def _is_control(ch):
    """Categories Cc, Cf, Co (and Cs), not \\t \\n \\r; unassigned code points (Cn) are kept, as tokenizers."""
    category = unicodedata.category(ch)
    return (ch not in "\t\n\r" and category.startswith("C") and category != "Cn"
            and ord(ch) not in _NOT_CONTROL)


def _is_nonspacing_mark(ch):
    cp = ord(ch)
    if cp in _EXTRA_MARK:
        return True
    return unicodedata.category(ch) == "Mn" and cp not in _NOT_MARK


def _is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or cp in _EXTRA_PUNCTUATION:
        return True
    return unicodedata.category(ch).startswith("P") and cp not in _NOT_PUNCTUATION


def normalize(text, lowercase=True, strip_accents=None, handle_chinese_chars=True):
    """Steps 1-4 of the module docstring (the `tokenizers` BertNormalizer)."""
    out = []
    for ch in text:
        if ch == "\0" or ch == "\ufffd" or _is_control(ch):
            continue
        if ch in _WHITESPACE:
            out.append(" ")
        elif handle_chinese_chars and _is_cjk(ch):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = "".join(out)
    if lowercase if strip_accents is None else strip_accents:
        text = "".join(ch for ch in unicodedata.normalize("NFD", text) if not _is_nonspacing_mark(ch))
    if lowercase:
        text = "".join(ch.lower() for ch in text)
    return text


def split_words(text):
    """Step 5: whitespace-separated words, with every punctuation character a word of its own."""
    words = []
    for chunk in text.split(" "):
        start = 0
        for i, ch in enumerate(chunk):
            if _is_punctuation(ch):
                if i > start:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


def wordpiece(word, vocab, unk_token="[UNK]", prefix="##", max_chars=MAX_CHARS_PER_WORD):
    """Step 6: greedy longest-match-first sub-words of one word (a list of vocabulary entries)."""
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
            end -= 1
        else:
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces


def _read_json(path, required):
    if not os.path.isfile(path):
        if required:
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


class BertTokenizer:
    """WordPiece tokenizer with BERT's normalisation (module docstring), as transformers' `BertTokenizer`.

    Args:
        vocab: list of tokens (id = position) as in vocab.txt.
        do_lower_case, strip_accents, tokenize_chinese_chars: as tokenizer_config.json (strip_accents None
            follows do_lower_case).
        model_max_length: the length `truncation=True` cuts to when no max_length is given.
    """

    SPECIAL_TOKENS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
    DEFAULTS = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")

    def __init__(self, vocab, do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True,
                 model_max_length=512, **special_tokens):
        if not isinstance(vocab, (list, tuple)) or not vocab or not all(isinstance(t, str) for t in vocab):
            raise TypeError("vocab must be a non-empty list of token strings")
        self.vocab = {}
        for i, token in enumerate(vocab):
            self.vocab.setdefault(token, i)  # the first occurrence wins, as transformers' load_vocab
        self.ids_to_tokens = list(vocab)
        self.do_lower_case, self.strip_accents = bool(do_lower_case), strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        if not isinstance(model_max_length, int) or model_max_length < 2:
            raise ValueError(f"model_max_length must be an int >= 2, got {model_max_length!r}")
        self.model_max_length = model_max_length
        for name in self.SPECIAL_TOKENS:
            token = special_tokens.get(name) or self.DEFAULTS[name]
            if token not in self.vocab:
                raise ValueError(f"{name}={token!r} is not in the vocabulary")
            setattr(self, name, token)
        specials = sorted({getattr(self, n) for n in self.SPECIAL_TOKENS}, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")")
        self.cls_token_id, self.sep_token_id = self.vocab[self.cls_token], self.vocab[self.sep_token]
        self.pad_token_id, self.unk_token_id = self.vocab[self.pad_token], self.vocab[self.unk_token]

    @classmethod
    def from_pretrained(cls, directory):
        """Read `vocab.txt`, and `tokenizer_config.json` / `special_tokens_map.json` where present."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"tokenizer directory not found: {directory}")
        vocab_path = os.path.join(directory, "vocab.txt")
        if not os.path.isfile(vocab_path):
            raise FileNotFoundError(f"tokenizer file not found: {vocab_path}")
        with open(vocab_path, encoding="utf-8") as f:
            vocab = [line.rstrip("\n") for line in f]
        config = _read_json(os.path.join(directory, "tokenizer_config.json"), required=False)
        specials = _read_json(os.path.join(directory, "special_tokens_map.json"), required=False)
        kwargs = {name: config[name] for name in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
                  if config.get(name) is not None}  # null means the default
        max_length = config.get("model_max_length", 512)
        kwargs["model_max_length"] = max_length if isinstance(max_length, int) and max_length < 10**9 else 512
        for name in cls.SPECIAL_TOKENS:
            value = specials.get(name, config.get(name))
            if isinstance(value, dict):  # {"content": "[CLS]", ...} in newer files
                value = value.get("content")
            if value is not None:
                kwargs[name] = value
        return cls(vocab, **kwargs)

    def __len__(self):
        return len(self.ids_to_tokens)

    # ----- text -> tokens -> ids ---------------------------------------------------------------
    def tokenize(self, text):
        """Steps 0-6: the word pieces of `text` (no [CLS] / [SEP])."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        tokens = []
        for i, part in enumerate(self._special_pattern.split(text)):
            if i % 2:  # a special token, kept whole
                tokens.append(part)
                continue
            normalized = normalize(part, self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars)
            for word in split_words(normalized):
                tokens.extend(wordpiece(word, self.vocab, self.unk_token))
        return tokens

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        return [self.ids_to_tokens[i] for i in ids]

    def encode(self, text, truncation=False, max_length=None):
        """[CLS] ids [SEP] for one text."""
        return self(text, truncation=truncation, max_length=max_length)["input_ids"]

    def __call__(self, text, padding=False, truncation=False, max_length=None, return_tensors=None):
        """Tokenize one text or a list of texts, as transformers' tokenizer call.

        Args:
            text: a str or a list of str.
            padding: False (no padding), True / "longest" (to the longest in the batch) or "max_length".
            truncation: cut each sequence (specials included) to max_length, or to model_max_length if None.
            max_length: the length for truncation and padding="max_length".
            return_tensors: None (lists) or "np" (int64 arrays, which needs equal lengths: pad).

        Returns:
            {"input_ids", "token_type_ids", "attention_mask"}: lists (a list of lists for a list of texts)
            or (batch, length) arrays.
        """
        single = isinstance(text, str)
        texts = [text] if single else text
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text[{i}] must be a str, got {type(t).__name__}")
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"max_length must be an int >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
        if padding == "max_length" and max_length is None:
            max_length = self.model_max_length
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors must be None or 'np', got {return_tensors!r}")
        limit = (max_length or self.model_max_length) if truncation else None
        rows = []
        for t in texts:
            ids = self.convert_tokens_to_ids(self.tokenize(t))
            if limit is not None:
                ids = ids[:limit - 2]
            rows.append([self.cls_token_id] + ids + [self.sep_token_id])
        masks = [[1] * len(r) for r in rows]
        if padding in (True, "longest", "max_length") and rows:
            width = max(len(r) for r in rows) if padding != "max_length" else max(max_length, 0)
            masks = [m + [0] * (width - len(m)) for m in masks]
            rows = [r + [self.pad_token_id] * (width - len(r)) for r in rows]
        types = [[0] * len(r) for r in rows]
        out = {"input_ids": rows, "token_type_ids": types, "attention_mask": masks}
        if return_tensors == "np":
            if len({len(r) for r in rows}) > 1:
                raise ValueError("return_tensors='np' needs sequences of one length: pass padding=True")
            out = {k: np.array(v, dtype=np.int64).reshape(len(rows), -1) for k, v in out.items()}
        elif single:
            out = {k: v[0] for k, v in out.items()}
        return out
