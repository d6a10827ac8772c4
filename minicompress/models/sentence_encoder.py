"""A sentence encoder in the sentence-transformers layout: BERT, then pooling over the tokens, then
(optionally) L2 normalisation, as `sentence_transformers.SentenceTransformer.encode`.

    h = BertModel(ids, mask).last_hidden_state                       (B, L, D)
    mean pooling:  e_b = sum_t mask_bt h_bt / max(sum_t mask_bt, 1e-9)   (the pooling config's default mode)
    cls pooling:   e_b = h_b0          max pooling: e_b = max over real tokens of h_bt
    normalize:     e_b / max(||e_b||_2, 1e-12)                         (torch.nn.functional.normalize)

A directory holds `config.json` and `model.safetensors` (the BERT), `vocab.txt` and `tokenizer_config.json`
(the tokenizer), `sentence_bert_config.json` (max_seq_length) and `1_Pooling/config.json` (the pooling mode).

    >>> encoder = SentenceEncoder.from_pretrained(directory)
    >>> encoder.encode(["A man is eating food.", "Someone is eating."]).shape
    (2, 384)
"""
import json
import os

import numpy as np

from ..autograd import no_grad
from ..nn.bert import BertModel
from ..nn.module import Module
from ..tensor import Tensor
from ..text import BertTokenizer

POOLING_MODES = ("mean", "cls", "max")
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def _read_json(path, default=None):
    if not os.path.isfile(path):
        if default is not None:
            return default
        raise FileNotFoundError(f"sentence encoder file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def pooling_mode_from_config(config, path="1_Pooling/config.json"):
    """The one pooling mode a sentence-transformers Pooling config switches on."""
    modes = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
    unsupported = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in _POOLING_KEYS]
    if unsupported or len(modes) != 1:
        raise ValueError(f"{path}: exactly one of {sorted(_POOLING_KEYS)} must be true (got {modes + unsupported})")
    return modes[0]


def pool(hidden, attention_mask, mode="mean"):
    """(B, L, D) token vectors and (B, L) 0/1 mask -> (B, D) sentence vectors (module docstring)."""
    mask = Tensor(np.asarray(attention_mask, dtype=hidden.dtype)[:, :, None])
    if mode == "mean":
        counts = np.maximum(mask.data.sum(axis=1), 1e-9).astype(hidden.dtype)
        return (hidden * mask).sum(dim=1) / Tensor(counts)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":  # padded tokens get a very negative value first, as sentence-transformers
        return (hidden * mask + Tensor((1 - mask.data) * np.float32(-1e9))).amax(dim=1)
    raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")


def l2_normalize(e, eps=1e-12):
    """e / max(||e||_2, eps) along the last axis, as torch.nn.functional.normalize(p=2, dim=1)."""
    norms = np.maximum(np.sqrt((e.astype(np.float64) ** 2).sum(axis=-1, keepdims=True)), eps)
    return (e / norms).astype(e.dtype)


class SentenceEncoder(Module):
    """BERT + pooling, with the tokenizer that goes with it.

    forward(input_ids, attention_mask) -> (B, D) pooled Tensor (differentiable, not normalised);
    encode(sentences) -> (N, D) float32 array, the vectors `SentenceTransformer.encode` gives.
    """

    def __init__(self, bert, tokenizer, max_seq_length=256, pooling_mode="mean"):
        super().__init__()
        if not isinstance(bert, BertModel):
            raise TypeError(f"bert must be a BertModel, got {type(bert).__name__}")
        if not isinstance(tokenizer, BertTokenizer):
            raise TypeError(f"tokenizer must be a BertTokenizer, got {type(tokenizer).__name__}")
        if pooling_mode not in POOLING_MODES:
            raise ValueError(f"pooling_mode must be one of {POOLING_MODES}, got {pooling_mode!r}")
        limit = bert.config.max_position_embeddings
        if not isinstance(max_seq_length, int) or not 2 <= max_seq_length <= limit:
            raise ValueError(f"max_seq_length must be an int in [2, {limit}], got {max_seq_length!r}")
        self.bert = bert
        self.tokenizer, self.max_seq_length, self.pooling_mode = tokenizer, max_seq_length, pooling_mode

    @classmethod
    def from_pretrained(cls, directory):
        directory = os.fspath(directory) if directory is not None else None
        if not isinstance(directory, str) or not os.path.isdir(directory):
            raise FileNotFoundError(f"directory must be an existing model directory, got {directory!r}")
        bert = BertModel.from_pretrained(directory)
        tokenizer = BertTokenizer.from_pretrained(directory)
        st_config = _read_json(os.path.join(directory, "sentence_bert_config.json"), default={})
        max_seq_length = st_config.get("max_seq_length") or min(tokenizer.model_max_length,
                                                                bert.config.max_position_embeddings)
        pooling_path = os.path.join(directory, "1_Pooling", "config.json")
        pooling = _read_json(pooling_path, default={"pooling_mode_mean_tokens": True})
        return cls(bert, tokenizer, max_seq_length, pooling_mode_from_config(pooling, pooling_path)).eval()

    def tokenize(self, sentences):
        return self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_seq_length,
                              return_tensors="np")

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids, attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling_mode)

    def encode(self, sentences, batch_size=32, normalize=True):
        """(N, D) float32 embeddings of N sentences, batch by batch (sentences of similar length together,
        so that little padding is computed; the order of the result is the order of `sentences`)."""
        if isinstance(sentences, str) or not isinstance(sentences, (list, tuple)):
            raise TypeError(f"sentences must be a list of str, got {type(sentences).__name__}")
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentences[{i}] must be a str, got {type(s).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        dim = self.bert.config.hidden_size
        out = np.zeros((len(sentences), dim), np.float32)
        rows = self.tokenizer([*sentences], truncation=True, max_length=self.max_seq_length)["input_ids"]
        order = np.argsort([-len(ids) for ids in rows], kind="stable")
        with no_grad():
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                width = len(rows[index[0]])  # the longest of the batch comes first
                ids = np.full((len(index), width), self.tokenizer.pad_token_id, np.int64)
                mask = np.zeros((len(index), width), np.int64)
                for row, i in enumerate(index):
                    ids[row, :len(rows[i])], mask[row, :len(rows[i])] = rows[i], 1
                out[index] = self(ids, mask).data
        return l2_normalize(out) if normalize else out
