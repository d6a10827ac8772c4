"""Head pruning: the importance of Michel et al. (2019) against the same gradient computed in torch with
gates hooked into transformers' BertModel, and the pruned (smaller) model against transformers' model
with the same heads cut out of its weights."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import Tensor
from minicompress.models import SentenceEncoder
from minicompress.nn.bert import BertConfig, BertModel
from minicompress.prune import head_importance, heads_to_prune, prune_heads
from minicompress.text import BertTokenizer

transformers = pytest.importorskip("transformers", reason="transformers' BertModel is the oracle")

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "far", "away", "red", "blue", "big"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
SENTENCES = ["the cat sat on a mat", "a dog ran far away", "the big red dog", "blue cat", "the mat ran"]
CONFIG = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=24, max_position_embeddings=16)


def _pair(seed):
    torch.manual_seed(seed)
    reference = transformers.BertModel(transformers.BertConfig(
        **CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), add_pooling_layer=False).eval()
    bert = BertModel(BertConfig(**CONFIG), add_pooling_layer=False)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    state["embeddings.position_ids"] = np.arange(16)[None]
    bert.load_state_dict(state)
    return SentenceEncoder(bert.eval(), BertTokenizer(VOCAB), max_seq_length=16), reference


def _torch_importance(reference, tokenizer, batches):
    """Michel et al.'s |dL/dgate| in torch: gates multiply each head's context through forward hooks."""
    layers, heads, d = CONFIG["num_hidden_layers"], CONFIG["num_attention_heads"], 4
    total = np.zeros((layers, heads))
    for batch in batches:
        tokens = tokenizer(batch, padding=True, return_tensors="np")
        ids, mask = torch.from_numpy(tokens["input_ids"]), torch.from_numpy(tokens["attention_mask"])
        gates = torch.ones(layers, heads, requires_grad=True)
        hooks = [layer.attention.self.register_forward_hook(
            lambda m, args, out, i=i: (
                (out[0].unflatten(-1, (heads, d)) * gates[i][:, None]).flatten(-2),) + tuple(out[1:]))
            for i, layer in enumerate(reference.encoder.layer)]

        def embed():
            hidden = reference(ids, attention_mask=mask).last_hidden_state
            m = mask[..., None].float()
            return (hidden * m).sum(1) / m.sum(1)

        with torch.no_grad():
            target = torch.nn.functional.normalize(embed(), dim=1)
        e = torch.nn.functional.normalize(embed(), dim=1)
        loss = torch.nn.functional.cross_entropy(20.0 * e @ target.T, torch.arange(len(batch)))
        loss.backward()
        for h in hooks:
            h.remove()
        total += gates.grad.abs().numpy()
    importance = total / len(batches)
    return importance / np.linalg.norm(importance, axis=1, keepdims=True)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**16))
def test_importance_matches_torch_gates(seed):
    encoder, reference = _pair(seed)
    batches = [SENTENCES[:3], SENTENCES[2:]]
    got = head_importance(encoder, batches)
    expected = _torch_importance(reference, encoder.tokenizer, batches)
    # gradients through two float32 layers, normalised per layer: relative differences of ~1e-5
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    assert all(p.grad is None for p in encoder.parameters())  # the weights got no gradient


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**16), st.lists(st.sets(st.integers(0, 3), max_size=3), min_size=2, max_size=2))
def test_pruned_model_equals_transformers_with_the_heads_cut_out(seed, pruned):
    encoder, reference = _pair(seed)
    heads = {i: sorted(hs) for i, hs in enumerate(pruned) if hs}
    dense = copy.deepcopy(encoder.bert)
    prune_heads(encoder.bert, heads)
    assert encoder.bert.heads_per_layer() == [4 - len(hs) for hs in pruned]
    with torch.no_grad():  # the oracle: transformers' layers with the heads' rows / columns removed
        for i, hs in heads.items():
            keep = torch.cat([torch.arange(h * 4, h * 4 + 4) for h in range(4) if h not in hs])
            attention = reference.encoder.layer[i].attention
            for name in ("query", "key", "value"):
                old = getattr(attention.self, name)
                new = torch.nn.Linear(16, len(keep))
                new.weight.copy_(old.weight[keep]), new.bias.copy_(old.bias[keep])
                setattr(attention.self, name, new)
            old = attention.output.dense
            new = torch.nn.Linear(len(keep), 16)
            new.weight.copy_(old.weight[:, keep]), new.bias.copy_(old.bias)
            attention.output.dense = new
    tokens = encoder.tokenizer(SENTENCES, padding=True, return_tensors="np")
    got = encoder.bert(tokens["input_ids"], tokens["attention_mask"]).last_hidden_state.data
    with torch.no_grad():
        expected = reference(torch.from_numpy(tokens["input_ids"]),
                             attention_mask=torch.from_numpy(tokens["attention_mask"])).last_hidden_state.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)
    gates = np.ones((2, 4), np.float32)
    for i, hs in heads.items():
        gates[i, hs] = 0
    masked = dense(tokens["input_ids"], tokens["attention_mask"], head_mask=Tensor(gates)).last_hidden_state.data
    np.testing.assert_allclose(got, masked, rtol=1e-5, atol=1e-6)  # the same model: cut out == gated off


def test_heads_to_prune_is_global_and_keeps_a_head_per_layer():
    importance = np.array([[0.1, 0.5, 0.2], [0.05, 0.06, 0.9]])
    assert heads_to_prune(importance, 2) == {1: [0, 1]}
    assert heads_to_prune(importance, 3) == {0: [0], 1: [0, 1]}
    assert heads_to_prune(importance, 4) == {0: [0, 2], 1: [0, 1]}
    with pytest.raises(ValueError, match=r"amount must be an int in \[0, 4\]"):
        heads_to_prune(importance, 5)
    encoder, _ = _pair(0)
    with pytest.raises(ValueError, match="keep at least one"):
        prune_heads(encoder.bert, {0: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="at least two sentences"):
        head_importance(encoder, [["only one"]])
