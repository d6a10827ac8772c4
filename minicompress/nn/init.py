"""Weight initialisation, with torch's default choices for Linear and Conv2d.

torch initialises both with kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
and the bias with the same bound. The numbers differ from torch's (different generator); the
distribution is the same.
"""
import math

import numpy as np

from ..random import default_generator


def fan_in(shape):
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def uniform_(tensor, low=0.0, high=1.0, generator=None):
    rng = generator or default_generator()
    tensor.data[...] = rng.uniform(low, high, tensor.shape).astype(tensor.dtype)
    return tensor


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    rng = generator or default_generator()
    tensor.data[...] = rng.normal(mean, std, tensor.shape).astype(tensor.dtype)
    return tensor


def zeros_(tensor):
    tensor.data[...] = 0
    return tensor


def ones_(tensor):
    tensor.data[...] = 1
    return tensor


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-b, b) with b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)) for leaky_relu."""
    if mode != "fan_in":
        raise ValueError(f"mode={mode!r}: only 'fan_in' is supported")
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else math.sqrt(2.0)
    bound = gain * math.sqrt(3.0 / fan_in(tensor.shape))
    return uniform_(tensor, -bound, bound, generator)


def default_init_(weight, bias=None):
    """torch's reset_parameters() for Linear and Conv2d."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(fan_in(weight.shape)) if fan_in(weight.shape) > 0 else 0
        uniform_(bias, -bound, bound)
