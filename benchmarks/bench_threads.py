"""Numba's threading layers compared with torch imported in the same process: what a parallel call costs
and what the int8 Linear takes under each, and how torch's own int8 Linear fares beside it.

    python benchmarks/bench_threads.py            # print the table
    python benchmarks/bench_threads.py --write    # also put it in benchmarks/RESULTS.md

Each layer runs in a fresh process (the layer is fixed at the first parallel call, the OpenMP wait
policy when the OpenMP runtime loads). torch is imported first, as in a script that uses both, with
2 threads on each side; calls of ours and of torch's alternate, so each finds the other's threads
as they left them. A layer that does not load (no TBB library, no OpenMP runtime) is reported so.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# (name, NUMBA_THREADING_LAYER, OMP_WAIT_POLICY): torch's OpenMP threads wait passively in every row but
# two, as in the other benchmarks and the tests (conftest.py).
CONFIGS = [("workqueue", "workqueue", "PASSIVE"), ("omp, passive wait", "omp", "PASSIVE"),
           ("omp, libgomp's default wait", "omp", None), ("omp, active wait", "omp", "ACTIVE"),
           ("tbb", "tbb", "PASSIVE")]
HEADING = "## Threading layers (bench_threads.py)"
COMMAND = "python benchmarks/bench_threads.py --write"
CONCLUSION = ("\nTwo runs (load average 5-13 on the 2 cores from other work) agreed on the shape: OpenMP with passive\nwaiting cost 11-14 us per parallel call against 61-77 us for workqueue, and ran the int8 Linear at\nbatch 64 faster; libgomp's default and active waits had calls of 12-18 ms (spinning threads fighting\ntorch's for the cores). The TBB row used the `tbb` wheel's library on LD_LIBRARY_PATH (it is not a\ndependency); it slowed torch's own int8 Linear beside it. Hence the default in kernels/__init__.py.\n")


def child():
    """Run in the subprocess: time the cases, print one JSON line."""
    import statistics
    import time

    import torch
    import numba
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import minicompress as mc
    import minicompress.functional as F
    import torch.ao.nn.quantized as tnnq
    from minicompress.kernels import threads
    from minicompress.quant import modules as nnq
    from quant_pairs import quantized_pair, weight_pair

    torch.set_num_threads(2)
    numba.set_num_threads(2)
    torch.backends.quantized.engine = "x86"

    def median_us(fn, other=None, repeat=200):
        for _ in range(5):
            fn()
        times = []
        for _ in range(repeat):
            if other is not None:
                other()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e6

    def _touch(out):
        for i in numba.prange(out.shape[0]):
            out[i] = i
    touch = threads.ParallelKernel(_touch)
    small = np.zeros(2)

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.03, (1024, 1024)).astype(np.float32)
    b = rng.normal(0, 0.1, 1024).astype(np.float32)
    qw, t_qw = weight_pair(w)
    ours = nnq.Linear(qw, b, 0.05, 64)
    theirs = tnnq.Linear(1024, 1024)
    theirs.set_weight_bias(t_qw, torch.from_numpy(b))
    theirs.scale, theirs.zero_point = 0.05, 64
    results = {}
    with torch.no_grad(), mc.no_grad():
        qx64, t_qx64 = quantized_pair(rng.uniform(-1, 1, (64, 1024)).astype(np.float32), 1 / 64, 64)
        qx1, t_qx1 = quantized_pair(rng.uniform(-1, 1, (1, 1024)).astype(np.float32), 1 / 64, 64)
        pool_input = mc.randn(64, 64, 4, 4)
        results["empty parallel call us"] = median_us(lambda: touch(small))
        results["int8 Linear b64 us"] = median_us(lambda: ours(qx64), other=lambda: theirs(t_qx64))
        results["torch int8 Linear b64 us"] = median_us(lambda: theirs(t_qx64), other=lambda: ours(qx64))
        serial_below = threads.SERIAL_BELOW
        threads.SERIAL_BELOW = 0
        results["int8 Linear b1 parallel us"] = median_us(lambda: ours(qx1), other=lambda: theirs(t_qx1))
        threads.SERIAL_BELOW = 1 << 62
        results["int8 Linear b1 serial us"] = median_us(lambda: ours(qx1), other=lambda: theirs(t_qx1))
        threads.SERIAL_BELOW = serial_below
        results["max_pool2d 64x64x4x4 us"] = median_us(lambda: F.max_pool2d(pool_input, 2), other=lambda: theirs(t_qx64))
    results["layer"] = numba.threading_layer()
    print(json.dumps(results))


def main(write=False):
    rows, headers = [], None
    for name, layer, wait_policy in CONFIGS:
        env = dict(os.environ, NUMBA_THREADING_LAYER=layer, OMP_WAIT_POLICY=wait_policy or "")
        if wait_policy is None:
            del env["OMP_WAIT_POLICY"]
        run = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
        if run.returncode != 0 or not run.stdout.strip():
            reason = (run.stderr.strip().splitlines() or ["no output"])[-1][:80]
            rows.append([name] + [f"did not load: {reason}"])
            continue
        result = json.loads(run.stdout.strip().splitlines()[-1])
        headers = headers or [key for key in result if key != "layer"]
        rows.append([name] + [f"{result[key]:.1f}" for key in headers])
    headers = ["layer"] + (headers or [])
    width = len(headers)
    rows = [row if len(row) == width else row + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    print("\n".join(lines))
    if write:
        import re
        section = (f"{HEADING}\n\n`{COMMAND}` (torch imported first, 2 threads each, median of 200 calls, each "
                   f"call of ours alternating with one of torch's; the 2 cores were shared with other work, so "
                   f"single figures are noisy).\n\n" + "\n".join(lines) + "\n" + CONCLUSION)
        path = Path(__file__).resolve().parent / "RESULTS.md"
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        pattern = re.compile(re.escape(HEADING) + r".*?(?=^## |\Z)", re.S | re.M)
        text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
        path.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put the table in benchmarks/RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    child() if arguments.child else main(arguments.write)
