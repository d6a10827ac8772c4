"""SentenceEncoder against transformers' BertModel with sentence-transformers' mean pooling and L2
normalisation (written here in torch), and its errors for bad input."""
import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch

from minicompress import nn
from minicompress.models import SentenceEncoder
from minicompress.pipelines.embed import SENTENCES as EMBED_SENTENCES, calibration_texts, int8_per_token
from minicompress.quant.dynamic_per_token import PerTokenDynamicQuantizedLinear
from minicompress.quant.embedding import QuantizedEmbedding
from minicompress.nn import SmoothedLinear
from minicompress.quant.smoothquant import get_act_scales, smooth_lm
from minilm import MODEL_DIR, SENTENCES, requires_minilm

pytestmark = requires_minilm
transformers = pytest.importorskip("transformers", reason="transformers' BertModel is the oracle")


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder.from_pretrained(MODEL_DIR)


def reference_embeddings(sentences, normalize=True):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(MODEL_DIR))
    model = transformers.BertModel.from_pretrained(str(MODEL_DIR)).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return (torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled).numpy()


def test_embeddings_equal_transformers(encoder):
    got = encoder.encode(SENTENCES, batch_size=3)  # batches of mixed lengths, sorted and restored
    expected = reference_embeddings(SENTENCES)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    assert (got * expected).sum(axis=1).min() >= 0.99999
    raw = encoder.encode(SENTENCES[:2], normalize=False)
    np.testing.assert_allclose(raw, reference_embeddings(SENTENCES[:2], normalize=False), atol=1e-5)


def test_smoothquant_per_token_int8_keeps_the_held_out_embeddings(encoder):
    calibration = calibration_texts()
    held_out = [s for s in EMBED_SENTENCES + SENTENCES if s not in calibration]      # 29 sentences
    smoothed = smooth_lm(copy.deepcopy(encoder), get_act_scales(encoder, lambda m: m.encode(calibration)))
    assert sum(isinstance(m, SmoothedLinear) for m in smoothed.modules()) == 6 * 6
    # smoothing changes only float rounding: the same 1e-5 as the unsmoothed encoder against transformers
    expected = reference_embeddings(held_out)
    assert np.abs(smoothed.encode(held_out) - expected).max() <= 1e-5

    reference = encoder.encode(held_out)
    quantized = int8_per_token(encoder, calibration)
    assert not any(type(m) in (nn.Linear, SmoothedLinear, nn.Embedding) for m in quantized.modules())
    assert sum(isinstance(m, PerTokenDynamicQuantizedLinear) for m in quantized.modules()) == 6 * 6 + 1  # + pooler
    assert sum(isinstance(m, QuantizedEmbedding) for m in quantized.modules()) == 3
    cosine = (quantized.encode(held_out) * reference).sum(axis=1)
    # measured 0.9992 / 0.9973 (full-range per-tensor int8: 0.9914 / 0.9742; per token alone 0.9985 / 0.9930)
    assert cosine.mean() >= 0.995 and cosine.min() >= 0.99


def test_bad_input_names_the_argument(encoder, tmp_path):
    with pytest.raises(TypeError, match="sentences must be a list of str"):
        encoder.encode("one sentence")
    with pytest.raises(TypeError, match=r"sentences\[1\] must be a str, got NoneType"):
        encoder.encode(["fine", None])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        encoder.encode(["fine"], batch_size=0)
    with pytest.raises(FileNotFoundError, match="model directory"):
        SentenceEncoder.from_pretrained(tmp_path / "missing")
    broken = tmp_path / "broken"  # links to the real files, except those a case replaces (unlinked first)
    shutil.copytree(MODEL_DIR, broken, ignore=shutil.ignore_patterns("model.safetensors"), copy_function=os.symlink)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SentenceEncoder.from_pretrained(broken)
    (broken / "model.safetensors").write_bytes((MODEL_DIR / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors: header length"):
        SentenceEncoder.from_pretrained(broken)
    (broken / "1_Pooling" / "config.json").unlink()
    (broken / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": False}))
    (broken / "model.safetensors").unlink()
    os.symlink(MODEL_DIR / "model.safetensors", broken / "model.safetensors")
    with pytest.raises(ValueError, match="exactly one of"):
        SentenceEncoder.from_pretrained(broken)
