"""nn.Embedding and the BERT encoder against torch / transformers' BertModel on the same weights: forward
and every parameter's gradient on hypothesis-drawn small configurations and padding masks, and the real
all-MiniLM-L6-v2 checkpoint's forward."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from harness import check_op
from minicompress import functional as F
from minicompress import nn
from minicompress.nn.bert import BertConfig, BertModel
from minicompress.safetensors import load_file
from minilm import MODEL_DIR, SENTENCES, requires_minilm

transformers = pytest.importorskip("transformers", reason="transformers' BertModel is the oracle")


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.lists(st.integers(0, 5), min_size=1, max_size=3),
       st.sampled_from([None, 0, 2, -1]), st.integers(0, 2**16))
def test_embedding_matches_torch(num, dim, batch_shape, padding_idx, seed):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((num, dim)).astype(np.float32)
    indices = rng.integers(0, num, size=batch_shape)  # repeated indices: their gradients add up
    pad = None if padding_idx is None else padding_idx % num
    check_op(lambda w: F.embedding(indices, w, pad),
             lambda w: torch.nn.functional.embedding(torch.from_numpy(indices), w, pad), [weight])


def test_embedding_module_and_errors():
    layer = nn.Embedding(5, 3, padding_idx=1)
    assert layer.weight.shape == (5, 3) and not layer.weight.data[1].any()
    assert list(layer.state_dict()) == list(torch.nn.Embedding(5, 3, padding_idx=1).state_dict())
    with pytest.raises(IndexError, match=r"outside \[0, 5\)"):
        layer(np.array([0, 5]))
    with pytest.raises(TypeError, match="integer indices"):
        layer(np.array([0.5]))


def _pair(config_kwargs, seed):
    """A transformers BertModel with random weights and ours with the same state dict."""
    torch.manual_seed(seed)
    reference = transformers.BertModel(transformers.BertConfig(
        **config_kwargs, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    with torch.no_grad():  # LayerNorms and biases away from 1 / 0, so a swapped parameter shows
        for name, p in reference.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = BertModel(BertConfig(**config_kwargs)).eval()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    state["embeddings.position_ids"] = np.arange(config_kwargs["max_position_embeddings"])[None]
    ours.load_state_dict(state)
    return ours, reference


configs = st.fixed_dictionaries(dict(
    vocab_size=st.integers(8, 40), hidden_size=st.sampled_from([8, 12, 16]), num_hidden_layers=st.integers(1, 2),
    num_attention_heads=st.sampled_from([1, 2, 4]), intermediate_size=st.integers(4, 24),
    type_vocab_size=st.integers(1, 2), max_position_embeddings=st.just(16)))


@settings(max_examples=12, deadline=None)
@given(configs, st.integers(1, 3), st.integers(1, 7), st.integers(0, 2**16))
def test_bert_forward_and_gradients_match_transformers(config, batch, length, seed):
    ours, reference = _pair(config, seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config["vocab_size"], (batch, length))
    types = rng.integers(0, config["type_vocab_size"], (batch, length))
    lengths = rng.integers(1, length + 1, batch)  # at least one real token per row
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    out = ours(ids, mask, types)
    expected = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                         token_type_ids=torch.from_numpy(types))
    # float32 through a few layers and LayerNorms: differences of a few ulp of values of order 1
    np.testing.assert_allclose(out.last_hidden_state.data, expected.last_hidden_state.detach().numpy(),
                               rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(out.pooler_output.data, expected.pooler_output.detach().numpy(), rtol=1e-4, atol=2e-5)
    g_hidden = rng.standard_normal(out.last_hidden_state.shape).astype(np.float32)
    g_pooled = rng.standard_normal(out.pooler_output.shape).astype(np.float32)
    loss = (out.last_hidden_state * mc.tensor(g_hidden)).sum() + (out.pooler_output * mc.tensor(g_pooled)).sum()
    loss.backward()
    ((expected.last_hidden_state * torch.from_numpy(g_hidden)).sum()
     + (expected.pooler_output * torch.from_numpy(g_pooled)).sum()).backward()
    grads = dict(ours.named_parameters())
    for name, p in reference.named_parameters():
        want = np.zeros(p.shape, np.float32) if p.grad is None else p.grad.numpy()
        got = grads[name].grad
        assert got is not None, f"{name} got no gradient"
        # sums over batch and tokens of float32 products: a few ulp of the largest terms
        np.testing.assert_allclose(got.data, want, rtol=1e-3, atol=1e-4, err_msg=name)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="must divide hidden_size"):
        BertConfig(hidden_size=10, num_attention_heads=4)
    with pytest.raises(ValueError, match="only 'gelu'"):
        BertConfig(hidden_act="relu")
    model = BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=8, max_position_embeddings=4))
    with pytest.raises(ValueError, match="more than max_position_embeddings=4"):
        model(np.zeros((1, 5), np.int64))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(np.zeros((1, 3), np.int64), np.ones((1, 2)))
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        BertModel.from_pretrained("/nonexistent/model")


@requires_minilm
def test_checkpoint_keys_map_one_to_one_and_forward_matches_transformers():
    ours = BertModel.from_pretrained(MODEL_DIR)
    assert sorted(ours.state_dict()) == sorted(load_file(MODEL_DIR / "model.safetensors"))  # the file sorts its keys
    reference = transformers.BertModel.from_pretrained(str(MODEL_DIR)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(MODEL_DIR))
    batch = tokenizer(SENTENCES[:4], padding=True, return_tensors="np")
    out = ours(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in batch.items()})
    real = batch["attention_mask"].astype(bool)  # padded positions are never used downstream
    np.testing.assert_allclose(out.last_hidden_state.data[real], expected.last_hidden_state.numpy()[real], atol=1e-5)
    np.testing.assert_allclose(out.pooler_output.data, expected.pooler_output.numpy(), atol=1e-5)
