"""Latency of minicompress's int8 Linear and Conv2d against its own float32 layers and torch's quantized
modules (x86 engine), on the same inputs, with the same thread count, in one run.

    python benchmarks/bench_quant.py            # print the table
    python benchmarks/bench_quant.py --write    # also put it in benchmarks/RESULTS.md

Both int8 paths take a quint8 activation (7-bit codes, as torch's x86 qconfig produces) and per-channel
qint8 weights, and return quint8; the float paths take and return float32. Ratios below 1 mean the
left-hand side is faster.
"""
import argparse
import platform
import re
import sys
from pathlib import Path

from timing import THREADS, median_seconds, print_table, set_threads  # first: it sets thread environment

import numpy as np
import torch
import torch.ao.nn.quantized as tnnq
import torch.nn.functional as TF

import minicompress as mc
import minicompress.functional as F
from minicompress.quant import modules as nnq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from quant_pairs import quantized_pair, weight_pair  # noqa: E402  (the tests' helper: both sides get the same codes)

HEADING = "## Quantization (bench_quant.py)"
EXPLANATION = (
    "Where the aims are missed, the reason is the inner product. LLVM compiles the kernels' uint8 x int8\n"
    "dot product to bytes widened into int32 lanes and 256-bit `vpmaddwd`: 8 multiply-adds per instruction,\n"
    "plus the widening loads. fbgemm's `vpmaddubsw` on raw bytes does 32, and float32 BLAS issues two\n"
    "8-lane FMAs per cycle. Numba exposes neither instruction. The docstring of\n"
    "`minicompress/kernels/qlinear.py` has the details.")
COMMAND = "python benchmarks/bench_quant.py --write"


def cases():
    rng = np.random.default_rng(0)
    x_scale, x_zp, out_scale, out_zp = 1 / 64, 64, 0.05, 64

    x = rng.uniform(-1, 1, (64, 1024)).astype(np.float32)
    w = rng.normal(0, 0.03, (1024, 1024)).astype(np.float32)
    b = rng.normal(0, 0.1, 1024).astype(np.float32)
    qw, t_qw = weight_pair(w)
    ours = nnq.Linear(qw, b, out_scale, out_zp)
    theirs = tnnq.Linear(1024, 1024)
    theirs.set_weight_bias(t_qw, torch.from_numpy(b))
    theirs.scale, theirs.zero_point = out_scale, out_zp
    yield ("linear 64x1024 -> 1024", ours, theirs, lambda a: F.linear(a, mc.tensor(w), mc.tensor(b)),
           lambda a: TF.linear(a, torch.from_numpy(w), torch.from_numpy(b)), x, x_scale, x_zp)

    x = rng.uniform(-1, 1, (1, 64, 56, 56)).astype(np.float32)
    w = rng.normal(0, 0.05, (64, 64, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 64).astype(np.float32)
    qw, t_qw = weight_pair(w)
    ours = nnq.Conv2d(qw, b, out_scale, out_zp, 1, 1, 1, 1)
    theirs = tnnq.Conv2d(64, 64, 3, 1, 1)
    theirs.set_weight_bias(t_qw, torch.from_numpy(b))
    theirs.scale, theirs.zero_point = out_scale, out_zp
    yield ("conv2d 3x3 1x64x56x56 -> 64", ours, theirs, lambda a: F.conv2d(a, mc.tensor(w), mc.tensor(b), padding=1),
           lambda a: TF.conv2d(a, torch.from_numpy(w), torch.from_numpy(b), padding=1), x, x_scale, x_zp)


def main(write=False):
    set_threads()
    torch.backends.quantized.engine = "x86"
    rows = []
    with torch.no_grad(), mc.no_grad():
        for name, ours, theirs, ours_float, theirs_float, x, x_scale, x_zp in cases():
            qx, t_qx = quantized_pair(x, x_scale, x_zp)
            xf, t_xf = mc.tensor(x), torch.from_numpy(x)
            t_int8 = median_seconds(lambda: ours(qx), repeat=25)
            t_torch_int8 = median_seconds(lambda: theirs(t_qx), repeat=25)
            t_float = median_seconds(lambda: ours_float(xf), repeat=25)
            t_torch_float = median_seconds(lambda: theirs_float(t_xf), repeat=25)
            rows.append([name, f"{t_int8 * 1e3:.2f}", f"{t_float * 1e3:.2f}", f"{t_torch_int8 * 1e3:.2f}",
                         f"{t_torch_float * 1e3:.2f}", f"{t_int8 / t_float:.2f}", f"{t_int8 / t_torch_int8:.2f}"])
    headers = ["case", "mc int8 ms", "mc float32 ms", "torch int8 ms", "torch float32 ms", "mc int8 / mc float32",
               "mc int8 / torch int8"]
    print(f"threads={THREADS}")
    print_table(rows, headers)
    if write:
        write_results(rows, headers)


def write_results(rows, headers):
    """Replace (or append) this script's section of RESULTS.md, leaving the other sections alone."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    section = (f"{HEADING}\n\n`{COMMAND}` (threads={THREADS}, torch {torch.__version__}, x86 engine, "
               f"{platform.machine()}, median of 25 calls each). Aims: int8 faster than minicompress float32 "
               f"(left ratio below 1) and within 2x of torch's int8 (right ratio at most 2).\n\n"
               + "\n".join(lines) + "\n\n" + EXPLANATION + "\n")
    path = Path(__file__).resolve().parent / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(HEADING) + r".*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put the table in benchmarks/RESULTS.md")
    main(parser.parse_args(sys.argv[1:]).write)
