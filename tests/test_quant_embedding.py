"""Weight-only 8-bit row-wise embeddings against fbgemm's fused 8-bit row-wise pack / unpack in torch."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress import nn
from minicompress.quant.embedding import QuantizedEmbedding, quantize_embeddings, rowwise_quantize
from minicompress.quant.size import model_size_bytes


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.floats(1e-3, 1e3), st.integers(0, 2**16))
def test_rows_dequantize_as_torch_embedding_bag_byte(rows, dim, magnitude, seed):
    w = (np.random.default_rng(seed).standard_normal((rows, dim)) * magnitude).astype(np.float32)
    packed = torch.ops.quantized.embedding_bag_byte_prepack(torch.from_numpy(w))
    expected = torch.ops.quantized.embedding_bag_byte_unpack(packed).numpy()
    levels, scales, offsets = rowwise_quantize(w)
    np.testing.assert_array_equal(levels, packed[:, :dim].numpy())
    tail = packed[:, dim:].numpy().copy().view(np.float32)  # each row ends with its float32 scale and offset
    np.testing.assert_array_equal(scales, tail[:, 0])
    np.testing.assert_array_equal(offsets, tail[:, 1])
    layer = QuantizedEmbedding(levels, scales, offsets)
    got = layer(np.arange(rows)).data
    # the same float32 products; torch's unpack may fuse the multiply-add (one rounding less)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2 * np.spacing(np.abs(expected).max()))


def test_swapping_every_embedding_makes_the_tables_about_four_times_smaller():
    model = nn.Sequential(nn.Embedding(1000, 64), nn.Linear(64, 2))
    before = model_size_bytes(model)
    quantize_embeddings(model)
    assert isinstance(model[0], QuantizedEmbedding)
    table_before, table_after = 1000 * 64 * 4, 1000 * 64 + 1000 * 8
    assert before - model_size_bytes(model) == table_before - table_after
