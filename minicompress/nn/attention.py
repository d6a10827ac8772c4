"""Multi-head self-attention layers for (B, N, dim) sequences.

`EfficientAttention` is softmax attention (O(N^2) in sequence length N); `LinearAttention` uses the
elu + 1 feature map and costs O(N). Both project x to q, k, v with one Linear `qkv` and mix the
heads back with `proj`.
"""
from .. import functional as F
from .layers import Dropout, Linear
from .module import Module


def _check_heads(dim, num_heads):
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if dim % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide dim={dim}")


class _MultiHead(Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        _check_heads(dim, num_heads)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def _split_heads(self, x):
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"input must have shape (batch, tokens, {self.dim}), got {x.shape}")
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _merge_heads(self, out):
        B, H, N, d = out.shape
        return self.proj(out.transpose(1, 2).reshape(B, N, H * d))

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}"


class EfficientAttention(_MultiHead):
    """Multi-head softmax self-attention: softmax(q k^T / sqrt(d)) v per head."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0):
        super().__init__(dim, num_heads, qkv_bias)
        self.attn_drop = attn_drop

    def forward(self, x, attn_mask=None, is_causal=False):
        q, k, v = self._split_heads(x)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.attn_drop if self.training else 0.0,
                                             is_causal=is_causal)
        return self._merge_heads(out)


class LinearAttention(_MultiHead):
    """Multi-head linear attention (elu + 1 feature map), linear in the number of tokens."""

    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__(dim, num_heads, qkv_bias)

    def forward(self, x):
        q, k, v = self._split_heads(x)
        return self._merge_heads(F.linear_attention(q, k, v))
