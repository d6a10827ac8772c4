"""Latency of a model's forward pass: median wall time over repeated runs after a warm-up
(the warm-up absorbs Numba compilation and first-touch allocation)."""
import statistics
import time

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor


def measure_latency(model, example, repeat=30, warmup=3, min_seconds=0.2):
    """Median seconds per forward call of `model` on `example` (a Tensor or array), in eval mode.

    Runs at least `repeat` calls and at least `min_seconds` of them, so fast models are timed over
    enough calls for the median to be stable.
    """
    if repeat < 1 or warmup < 0:
        raise ValueError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    x = example if isinstance(example, Tensor) else Tensor(np.asarray(example, dtype=np.float32))
    model.eval()
    times = []
    with no_grad():
        for _ in range(warmup):
            model(x)
        started = time.perf_counter()
        while len(times) < repeat or time.perf_counter() - started < min_seconds:
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def latency_per_image(model, sample_shape, batch_sizes=(1, 64), seed=0, **kwargs):
    """{batch size: median seconds per image} on random inputs of shape (batch, *sample_shape)."""
    rng = np.random.default_rng(seed)
    out = {}
    for batch in batch_sizes:
        x = rng.random((batch,) + tuple(sample_shape), dtype=np.float32)
        out[batch] = measure_latency(model, x, **kwargs) / batch
    return out
