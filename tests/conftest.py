"""Test settings: hypothesis profiles sized for CI (2 cores), torch limited to the same threads."""
import os

# torch's idle OpenMP threads spin by default and take the 2 cores from Numba's and BLAS's threads
# between calls; passive waiting keeps the suite's run time steady. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=10,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def x86_engine():
    """torch's quantized engine set to 'x86' (the engine minicompress's integer kernels mirror), restored after."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    yield
    torch.backends.quantized.engine = previous


@pytest.fixture(scope="module")
def fbgemm_engine():
    """torch's quantized engine set to 'fbgemm', restored after: the kernels whose arithmetic minicompress's
    integer kernels reproduce exactly. The 'x86' engine is fbgemm on most CPUs, but on one with AVX512-VNNI
    it runs a convolution with symmetric weights through oneDNN (torch's should_use_onednn_quant), which
    scales by 1 / out_scale and so can put an exact tie (an accumulator times the multiplier = k + 0.5) on
    the other side: a test asserting equality would pass on one CPU and fail on another."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = previous
