"""Hypothesis strategies shared by the tests: shapes, arrays, broadcastable pairs."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOATS = st.sampled_from([np.float32, np.float64])


def arrays(shape, dtype=np.float32, low=-3.0, high=3.0):
    """Finite values in [low, high], drawn by hypothesis."""
    low, high = float(np.float32(low)), float(np.float32(high))
    return hnp.arrays(dtype, shape, elements=st.floats(low, high, allow_nan=False, width=32))


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=5):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


@st.composite
def broadcastable_pair(draw, dtype=np.float32, low=-3.0, high=3.0):
    """Two arrays whose shapes broadcast together (each side may have size-1 or missing dims)."""
    shapes_ = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4))
    a = draw(arrays(shapes_.input_shapes[0], dtype, low, high))
    b = draw(arrays(shapes_.input_shapes[1], dtype, low, high))
    return a, b


def positive(shape, dtype=np.float32):
    return arrays(shape, dtype, 0.1, 3.0)


@st.composite
def conv_geometry(draw, max_kernel=4, max_stride=3, max_padding=2, max_dilation=3, extra=8):
    """(kernel, stride, padding, dilation, size) pairs for a 2-D convolution or pooling window, with the
    input size (H, W) drawn so that at least one output pixel exists (and at most `extra` more rows of
    input than the dilated kernel needs)."""
    def pair(low, high):
        return draw(st.integers(low, high)), draw(st.integers(low, high))

    kernel, stride = pair(1, max_kernel), pair(1, max_stride)
    padding, dilation = pair(0, max_padding), pair(1, max_dilation)
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), d * (k - 1) + extra))
                 for k, p, d in zip(kernel, padding, dilation))
    return kernel, stride, padding, dilation, size
