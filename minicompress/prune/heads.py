"""Attention-head pruning by importance (Michel, Levy and Neubig, 2019, "Are Sixteen Heads Really Better
than One?"), with the pruned heads really removed from the query, key, value and output projections.

Importance. Each head h of layer l gets a gate xi_lh multiplying its output (`BertModel(head_mask=xi)`,
all ones: the model unchanged). The importance of a head is the expected sensitivity of a loss to its gate,

    I_lh = E_x | dL(x) / dxi_lh |             (Michel et al., eq. 2, at xi = 1)

normalised per layer by the L2 norm over its heads (their section 4.2). A sentence encoder has no labels,
so L is the retrieval loss against the unpruned model's own embeddings t (fixed): for a batch of
sentences with embeddings e (normalised, from the gated model),

    L = cross_entropy(scale * e t^T, labels = arange(batch))      scale = 20

(in-batch negatives, as sentence-transformers' MultipleNegativesRankingLoss): it grows when a sentence's
embedding moves towards another sentence's, which is what retrieval cares about, and its gradient is not
zero at xi = 1 (a distance to t would be).

Removal. `prune_heads(bert, {layer: [heads]})` keeps the rows h * d .. (h + 1) * d - 1 of the query, key
and value weights (and biases) of every kept head, and the same columns of the output dense weight; the
output is then exactly that of the model with those heads' gates at 0 (as transformers' former
`prune_heads`). Every layer keeps at least one head.
"""
import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..models.sentence_encoder import pool
from ..nn.bert import BertModel
from ..nn.layers import Linear
from ..nn.module import Parameter
from ..tensor import Tensor

RETRIEVAL_SCALE = 20.0


def _check_bert(bert):
    if not isinstance(bert, BertModel):
        raise TypeError(f"bert must be a BertModel, got {type(bert).__name__}")


def head_importance(encoder, batches, normalize_per_layer=True):
    """(layers, heads) float64 importance of every head of a SentenceEncoder's BERT (module docstring).

    Args:
        encoder: a SentenceEncoder (its `bert` and pooling are used; nothing is modified).
        batches: an iterable of lists of sentences (at least two per batch, for in-batch negatives).
        normalize_per_layer: divide each layer's scores by their L2 norm, as Michel et al.
    """
    bert = encoder.bert
    _check_bert(bert)
    heads = bert.heads_per_layer()
    if len(set(heads)) != 1:
        raise ValueError(f"head_importance needs the same number of heads in every layer, got {heads}")
    total, count = np.zeros((len(heads), heads[0])), 0
    was_training = encoder.training
    params = [(p, p.requires_grad) for p in encoder.parameters()]
    encoder.eval()
    for p, _ in params:  # only the gates need a gradient; the weights keep theirs untouched
        p.requires_grad_(False)
    try:
        for batch in batches:
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise ValueError("batches must yield lists of at least two sentences (in-batch negatives)")
            tokens = encoder.tokenize(batch)
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
            with no_grad():
                target = encoder(ids, mask).data
            target = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
            gates = Tensor(np.ones((len(heads), heads[0]), np.float32), requires_grad=True)
            hidden = bert(ids, mask, head_mask=gates).last_hidden_state
            e = pool(hidden, mask, encoder.pooling_mode)
            e = e / (e * e).sum(dim=1, keepdim=True).sqrt()
            logits = (e @ Tensor(target.T.copy())) * RETRIEVAL_SCALE
            F.cross_entropy(logits, Tensor(np.arange(len(batch)))).backward()
            total += np.abs(gates.grad.data.astype(np.float64))
            count += 1
    finally:
        encoder.train(was_training)
        for p, flag in params:
            p.requires_grad_(flag)
    if count == 0:
        raise ValueError("batches is empty: head importance needs at least one batch of sentences")
    importance = total / count
    if normalize_per_layer:
        importance = importance / np.maximum(np.linalg.norm(importance, axis=1, keepdims=True), 1e-20)
    return importance


def heads_to_prune(importance, amount):
    """{layer: [heads]}: the `amount` least important heads over the whole model (ties: lower layer, then
    lower head first), never the last head of a layer."""
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 2:
        raise ValueError(f"importance must be (layers, heads), got shape {importance.shape}")
    layers, heads = importance.shape
    if not isinstance(amount, (int, np.integer)) or not 0 <= amount <= layers * (heads - 1):
        raise ValueError(f"amount must be an int in [0, {layers * (heads - 1)}] (one head stays per layer), "
                         f"got {amount!r}")
    order = np.lexsort((np.tile(np.arange(heads), layers), np.repeat(np.arange(layers), heads),
                        importance.reshape(-1)))
    left, chosen = [heads] * layers, {}
    for flat in order:
        if sum(len(v) for v in chosen.values()) == amount:
            break
        layer, head = divmod(int(flat), heads)
        if left[layer] > 1:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
    return {layer: sorted(hs) for layer, hs in sorted(chosen.items())}


def _rows(linear, index):
    new = Linear(linear.in_features, len(index), bias=linear.bias is not None)
    new.weight = Parameter(linear.weight.data[index].copy())
    if linear.bias is not None:
        new.bias = Parameter(linear.bias.data[index].copy())
    return new


def _columns(linear, index):
    new = Linear(len(index), linear.out_features, bias=linear.bias is not None)
    new.weight = Parameter(linear.weight.data[:, index].copy())
    if linear.bias is not None:
        new.bias = Parameter(linear.bias.data.copy())
    return new


def prune_heads(bert, heads):
    """Remove attention heads in place: heads = {layer index: iterable of head indices (of that layer as it
    is now)}. Returns `bert`, smaller (module docstring)."""
    _check_bert(bert)
    if not isinstance(heads, dict):
        raise TypeError(f"heads must be a dict {{layer: [head, ...]}}, got {type(heads).__name__}")
    layers = bert.encoder.layer
    for layer_index, pruned in heads.items():
        if not isinstance(layer_index, (int, np.integer)) or not 0 <= layer_index < len(layers):
            raise ValueError(f"heads: layer {layer_index!r} is not in [0, {len(layers)})")
        attention = layers[layer_index].attention
        count, d = attention.self.num_attention_heads, attention.self.attention_head_size
        pruned = sorted(set(int(h) for h in pruned))
        if any(not 0 <= h < count for h in pruned):
            raise ValueError(f"heads[{layer_index}] = {pruned}: layer {layer_index} has heads 0..{count - 1}")
        keep = [h for h in range(count) if h not in pruned]
        if not keep:
            raise ValueError(f"heads[{layer_index}] would remove all {count} heads of layer {layer_index}; "
                             f"keep at least one")
        if len(keep) == count:
            continue
        index = np.concatenate([np.arange(h * d, (h + 1) * d) for h in keep])
        self_attention = attention.self
        self_attention.query = _rows(self_attention.query, index)
        self_attention.key = _rows(self_attention.key, index)
        self_attention.value = _rows(self_attention.value, index)
        self_attention.num_attention_heads, self_attention.all_head_size = len(keep), len(keep) * d
        attention.output.dense = _columns(attention.output.dense, index)
    return bert
