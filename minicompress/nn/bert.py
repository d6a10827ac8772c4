"""A BERT encoder (Devlin et al., 2019) whose modules and parameter names are those of Hugging Face
transformers' `BertModel`, so a checkpoint's state dict loads as it is, key for key:

    embeddings.word_embeddings.weight (V, D)   embeddings.position_embeddings.weight (P, D)
    embeddings.token_type_embeddings.weight (T, D)   embeddings.LayerNorm.{weight,bias}   embeddings.position_ids
    encoder.layer.N.attention.self.{query,key,value}.{weight,bias}
    encoder.layer.N.attention.output.dense.*   encoder.layer.N.attention.output.LayerNorm.*
    encoder.layer.N.intermediate.dense.*       encoder.layer.N.output.dense.*   encoder.layer.N.output.LayerNorm.*
    pooler.dense.*

One layer (post-norm, as BERT), with x (B, L, D) and the padding mask m (B, L), 1 = a real token:

    h   = LayerNorm(x + dense_o(MultiHead(x, m)))          MultiHead: per head softmax(q k^T / sqrt(d) + bias) v,
                                                           bias = -inf on keys where m == 0
    out = LayerNorm(h + dense_2(gelu(dense_1(h))))          gelu exact: x Phi(x)

The embeddings are LayerNorm(word[ids] + position[0..L) + token_type[types]). Dropout is in the modules
(as transformers) and active only in training mode. A layer may keep fewer heads than the config says
(after head pruning): its query/key/value map D -> heads * head_dim and its output dense heads * head_dim -> D.
"""
import json
import os
from collections import namedtuple

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from .activation import GELU
from .containers import ModuleList
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module

BertModelOutput = namedtuple("BertModelOutput", ["last_hidden_state", "pooler_output"])


class BertConfig:
    """The fields of transformers' `BertConfig` that the encoder uses, with its defaults (BERT-base)."""

    FIELDS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                  layer_norm_eps=1e-12, pad_token_id=0, position_embedding_type="absolute")

    def __init__(self, **kwargs):
        values = dict(self.FIELDS)
        values.update({k: v for k, v in kwargs.items() if k in self.FIELDS})
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if not isinstance(values[name], int) or values[name] < 1:
                raise ValueError(f"BertConfig: {name} must be a positive int, got {values[name]!r}")
        if values["hidden_size"] % values["num_attention_heads"]:
            raise ValueError(f"BertConfig: num_attention_heads={values['num_attention_heads']} must divide "
                             f"hidden_size={values['hidden_size']}")
        if values["hidden_act"] != "gelu":
            raise ValueError(f"BertConfig: hidden_act={values['hidden_act']!r}: only 'gelu' (exact erf) is supported")
        if values["position_embedding_type"] != "absolute":
            raise ValueError(f"BertConfig: position_embedding_type={values['position_embedding_type']!r}: only "
                             f"'absolute' is supported")
        self.__dict__.update(values)

    @classmethod
    def from_json_file(cls, path):
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"BERT config file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if values.get("model_type", "bert") != "bert":
            raise ValueError(f"{path}: model_type={values.get('model_type')!r}, expected 'bert'")
        return cls(**values)

    def to_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self):
        return f"BertConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def _as_array(x, name):
    array = x.data if isinstance(x, Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, sequence), got {array.shape}")
    return array


def attention_bias_mask(attention_mask):
    """(B, L) padding mask (1 / True = attend) -> boolean (B, 1, 1, L) mask for scaled_dot_product_attention,
    which broadcasts it over heads and queries: every query may look at every real key."""
    return attention_mask.astype(bool)[:, None, None, :]


class BertEmbeddings(Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        # the checkpoint stores it (transformers makes it non-persistent); kept so the keys match 1:1
        self.register_buffer("position_ids", Tensor(np.arange(config.max_position_embeddings, dtype=np.int64)[None]))

    def forward(self, input_ids, token_type_ids=None):
        B, L = input_ids.shape
        if L > self.position_embeddings.num_embeddings:
            raise ValueError(f"input_ids has {L} positions, more than max_position_embeddings="
                             f"{self.position_embeddings.num_embeddings}")
        if token_type_ids is None:
            token_type_ids = np.zeros((B, L), np.int64)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids.data[:, :L])
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(Module):
    """query, key, value: Linear(D, heads * head_dim); the heads attend over the real (unpadded) keys."""

    def __init__(self, hidden_size, num_heads, head_dim, attention_dropout=0.0):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = num_heads, head_dim
        self.all_head_size = num_heads * head_dim
        self.query = Linear(hidden_size, self.all_head_size)
        self.key = Linear(hidden_size, self.all_head_size)
        self.value = Linear(hidden_size, self.all_head_size)
        self.attention_dropout = attention_dropout

    def _heads(self, t):
        B, L, _ = t.shape
        return t.reshape(B, L, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def forward(self, hidden, mask, head_mask=None):
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.attention_dropout if self.training else 0.0)
        if head_mask is not None:  # (heads,) Tensor: gates each head's output (head importance, Michel et al.)
            out = out * head_mask.reshape(1, self.num_attention_heads, 1, 1)
        B, H, L, d = out.shape
        return out.transpose(1, 2).reshape(B, L, H * d)

    def extra_repr(self):
        return f"heads={self.num_attention_heads}, head_dim={self.attention_head_size}"


class BertSelfOutput(Module):
    def __init__(self, in_features, hidden_size, eps, dropout):
        super().__init__()
        self.dense = Linear(in_features, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, eps=eps)
        self.dropout = Dropout(dropout)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(Module):
    def __init__(self, config, num_heads=None):
        super().__init__()
        head_dim = config.hidden_size // config.num_attention_heads
        num_heads = config.num_attention_heads if num_heads is None else num_heads
        self.self = BertSelfAttention(config.hidden_size, num_heads, head_dim, config.attention_probs_dropout_prob)
        self.output = BertSelfOutput(num_heads * head_dim, config.hidden_size, config.layer_norm_eps,
                                     config.hidden_dropout_prob)

    def forward(self, hidden, mask, head_mask=None):
        return self.output(self.self(hidden, mask, head_mask), hidden)


class BertIntermediate(Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = GELU()

    def forward(self, hidden):
        return self.intermediate_act_fn(self.dense(hidden))


class BertLayer(Module):
    def __init__(self, config, num_heads=None):
        super().__init__()
        self.attention = BertAttention(config, num_heads)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config.intermediate_size, config.hidden_size, config.layer_norm_eps,
                                     config.hidden_dropout_prob)

    def forward(self, hidden, mask, head_mask=None):
        attended = self.attention(hidden, mask, head_mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(Module):
    def __init__(self, config):
        super().__init__()
        self.layer = ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden, mask, head_mask=None):
        for i, layer in enumerate(self.layer):
            hidden = layer(hidden, mask, None if head_mask is None else head_mask[i])
        return hidden


class BertPooler(Module):
    """tanh(dense(hidden[:, 0])): the [CLS] token's vector, as transformers' BertPooler."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return self.dense(hidden[:, 0]).tanh()


class BertModel(Module):
    """transformers' `BertModel` (absolute positions, no cross-attention, no cache).

    forward(input_ids (B, L) int, attention_mask (B, L) 0/1 or None, token_type_ids (B, L) or None,
    head_mask (layers, heads) Tensor or None) -> BertModelOutput(last_hidden_state (B, L, D) float32,
    pooler_output (B, D) or None without the pooler).

    >>> model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
    ...                              num_attention_heads=4, intermediate_size=64))
    >>> model(np.array([[101, 7, 102]])).last_hidden_state.shape
    (1, 3, 32)
    """

    def __init__(self, config, add_pooling_layer=True):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a BertConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, head_mask=None):
        ids = _as_array(input_ids, "input_ids")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
        mask = np.ones(ids.shape, bool) if attention_mask is None else _as_array(attention_mask, "attention_mask")
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {ids.shape}, got {mask.shape}")
        types = None if token_type_ids is None else _as_array(token_type_ids, "token_type_ids")
        if types is not None and types.shape != ids.shape:
            raise ValueError(f"token_type_ids must have the shape of input_ids {ids.shape}, got {types.shape}")
        hidden = self.encoder(self.embeddings(ids, types), attention_bias_mask(mask), head_mask)
        return BertModelOutput(hidden, None if self.pooler is None else self.pooler(hidden))

    @classmethod
    def from_pretrained(cls, directory):
        """The encoder of a Hugging Face checkpoint directory: `config.json` and `model.safetensors`
        (keys with or without a `bert.` prefix; the pooler is built when the file has one)."""
        from ..safetensors import load_file

        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"model directory not found: {directory}")
        config = BertConfig.from_json_file(os.path.join(directory, "config.json"))
        weights_path = os.path.join(directory, "model.safetensors")
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"{directory} has no model.safetensors (pickled .bin checkpoints are not read)")
        tensors = load_file(weights_path)
        if all(k.startswith("bert.") for k in tensors):
            tensors = {k[len("bert."):]: v for k, v in tensors.items()}
        model = cls(config, add_pooling_layer=any(k.startswith("pooler.") for k in tensors))
        tensors.setdefault("embeddings.position_ids", model.embeddings.position_ids.data)
        try:
            model.load_state_dict(tensors)
        except (KeyError, ValueError) as err:
            raise ValueError(f"{weights_path} does not match {config}: {err}") from None
        return model.eval()

    def heads_per_layer(self):
        return [layer.attention.self.num_attention_heads for layer in self.encoder.layer]
