"""Nearest-neighbour upsampling by an integer factor, as `torch.nn.Upsample(scale_factor=s,
mode='nearest')` / `F.interpolate(x, scale_factor=s, mode='nearest')`:

    out[n, c, i, j] = x[n, c, i // s, j // s]

Built from movement ops (unsqueeze, expand, reshape), so its gradient is theirs: each input pixel
receives the sum of the gradients of the s x s output pixels it was copied to.
"""
from .module import Module


def upsample_nearest(x, scale_factor=2):
    """(N, C, H, W) -> (N, C, s H, s W), each pixel repeated s x s times."""
    if x.ndim != 4:
        raise ValueError(f"upsample_nearest expects an (N, C, H, W) input, got shape {x.shape}")
    s = scale_factor
    n, c, h, w = x.shape
    return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)


class Upsample(Module):
    """`torch.nn.Upsample(scale_factor, mode='nearest')` for an integer `scale_factor` >= 1."""

    def __init__(self, scale_factor=2, mode="nearest"):
        super().__init__()
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(f"scale_factor must be an int >= 1, got {scale_factor!r}")
        if mode != "nearest":
            raise ValueError(f"mode must be 'nearest' (the only mode implemented), got {mode!r}")
        self.scale_factor, self.mode = scale_factor, mode

    def forward(self, x):
        return upsample_nearest(x, self.scale_factor)

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode='{self.mode}'"
