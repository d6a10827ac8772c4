"""Sweeps on an executor (minicompress.training.parallel): sensitivity_analysis and compare_quantization_methods
give exactly the serial result on a ProcessPoolExecutor, and on a Dask LocalCluster where `distributed`
is installed (the `[distributed]` extra). The serial run is the oracle: the point is bit-identity."""
import concurrent.futures
import functools

import numpy as np
import pytest

import minicompress as mc
import minicompress.prune as P
from minicompress import nn, quant
from minicompress.data import DataLoader, TensorDataset
from minicompress.training.parallel import run_tasks
from minicompress.training import accuracy


def _small_model_and_loader():
    mc.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    P.l1_unstructured(model[3], "weight", amount=0.25)  # an existing reparametrization travels too
    rng = np.random.default_rng(0)
    loader = DataLoader(TensorDataset(rng.standard_normal((40, 1, 8, 8)).astype(np.float32),
                                      rng.integers(0, 3, 40)), batch_size=16)
    return model, loader


def _mean_logit_with_noise(model, loader):
    """A metric that draws from the default generator, as a dropout-style evaluation would: equal
    across runs only if each task's generator is seeded the same wherever it runs."""
    total = sum(float(model(x).data.sum()) for x, _ in loader)
    return total + float(mc.randn(1).data[0])


def _sweeps(executor):
    model, loader = _small_model_and_loader()
    return [P.sensitivity_analysis(model, functools.partial(evaluate, loader=loader), [0.0, 0.3, 0.8],
                                   method=method, executor=executor, seed=7)
            for evaluate, method in [(accuracy, "l1_unstructured"), (_mean_logit_with_noise, "random_unstructured"),
                                     (_mean_logit_with_noise, "ln_structured")]]


def _assert_same_sweeps(got, expected):
    for a, b in zip(got, expected, strict=True):
        assert a.baseline == b.baseline
        assert {k: dict(v) for k, v in a.items()} == {k: dict(v) for k, v in b.items()}  # exactly, not approx


@pytest.fixture(scope="module")
def serial_sweeps():
    return _sweeps(None)


def test_sensitivity_on_a_process_pool_equals_the_serial_run(serial_sweeps):
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        _assert_same_sweeps(_sweeps(pool), serial_sweeps)
    # the random method did prune at random: another seed gives other metrics
    model, loader = _small_model_and_loader()
    other = P.sensitivity_analysis(model, functools.partial(_mean_logit_with_noise, loader=loader), [0.0, 0.3, 0.8],
                                   method="random_unstructured", seed=8)
    assert {k: dict(v) for k, v in other.items()} != {k: dict(v) for k, v in serial_sweeps[1].items()}


def test_sensitivity_seed_none_follows_manual_seed():
    model, loader = _small_model_and_loader()
    evaluate = functools.partial(_mean_logit_with_noise, loader=loader)
    runs = []
    for _ in range(2):
        mc.manual_seed(3)
        runs.append(P.sensitivity_analysis(model, evaluate, [0.5], method="random_unstructured"))
    assert dict(runs[0]) == dict(runs[1])


def test_compare_quantization_methods_on_a_process_pool_equals_the_serial_run():
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1).eval()
    x = np.random.default_rng(0).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    batches = [mc.tensor(x[:4]), mc.tensor(x[4:])]
    serial = quant.compare_quantization_methods(model, iter(batches))
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        pooled = quant.compare_quantization_methods(model, iter(batches), executor=pool)
    sizes = ("original_bytes", "static_bytes", "dynamic_bytes", "static_ratio", "dynamic_ratio")
    assert {k: pooled[k] for k in sizes} == {k: serial[k] for k in sizes}
    probe = mc.tensor(x)
    with mc.no_grad():
        for key in ("static_model", "dynamic_model"):
            a, b = serial[key](probe), pooled[key](probe)
            a, b = (t if isinstance(t, mc.Tensor) else t.dequantize() for t in (a, b))
            np.testing.assert_array_equal(b.data, a.data)


def _fails_on_two(value):
    if value == 2:
        raise ValueError("task 2 failed")
    return value


def test_run_tasks_keeps_task_order_and_raises_the_first_failure():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert run_tasks(_fails_on_two, [(v,) for v in (5, 1, 3)], pool) == [5, 1, 3]
        with pytest.raises(ValueError, match="task 2 failed"):
            run_tasks(_fails_on_two, [(v,) for v in (1, 2, 3)], pool)
    with pytest.raises(TypeError, match="executor"):
        run_tasks(_fails_on_two, [(1,)], executor="two processes")


def test_a_lambda_on_a_process_pool_gets_a_clear_error():
    model, loader = _small_model_and_loader()
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        with pytest.raises(TypeError, match="module-level functions"):
            P.sensitivity_analysis(model, lambda m: accuracy(m, loader), [0.5], executor=pool)
        model.register_forward_hook(lambda module, args, output: None)
        with pytest.raises(TypeError, match="model must be picklable"):
            P.sensitivity_analysis(model, functools.partial(accuracy, loader=loader), [0.5], executor=pool)


def test_sensitivity_on_a_dask_local_cluster_equals_the_serial_run(serial_sweeps):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        _assert_same_sweeps(_sweeps(client.get_executor()), serial_sweeps)
