"""Latency of minicompress's int8 Linear and Conv2d against its own float32 layers and torch's quantized
modules (x86 engine), on the same inputs, with the same thread count, in one run.

    python benchmarks/bench_quant.py            # print the table
    python benchmarks/bench_quant.py --write    # also put it in benchmarks/RESULTS.md
    python benchmarks/bench_quant.py --edge [--write]   # the 224x224 mobile classifier, four ways (below)
    python benchmarks/bench_quant.py --edge-cpu-time    # the same on one thread, by CPU time

Both int8 paths take a quint8 activation (7-bit codes, as torch's x86 qconfig produces) and per-channel
qint8 weights, and return quint8; the float paths take and return float32. Ratios below 1 mean the
left-hand side is faster.
"""
import argparse
import copy
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from timing import THREADS, median_seconds, print_table, set_threads  # first: it sets thread environment

import numpy as np
import torch
import numba
import torch.ao.nn.quantized as tnnq
import torch.ao.nn.quantized.dynamic as tnnqd
import torch.nn.functional as TF

import minicompress as mc
import minicompress.functional as F
from minicompress.kernels.qgemm import QGEMM_ROUTE
from minicompress.quant import modules as nnq
from minicompress.quant.dynamic import DynamicQuantizedLinear
from minicompress.quant.modules import kernel_routes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from quant_pairs import quantized_pair, weight_pair  # noqa: E402  (the tests' helper: both sides get the same codes)
from torch_twins import MobileClassifier as TorchMobileClassifier  # noqa: E402  (same module names as ours)

AVX2_STAND_IN = ('NUMBA_CPU_FEATURES="+avx2,+fma,-avx512f,-avx512bw,-avx512vl,-avx512vnni,-avxvnni" '
                 'FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2')


def cpu_label():
    """The CPU by name, and whether both frameworks were held to AVX2 (the stand-in for an AVX2-only CPU:
    Numba compiles for the features NUMBA_CPU_FEATURES lists, fbgemm, oneDNN and ATen dispatch on theirs)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if os.environ.get("NUMBA_CPU_FEATURES"):
        return f"{name} held to AVX2"
    from minicompress.kernels import simd
    return f"{name}, AVX512-VNNI" if simd.has_features("avx512vnni") else name


def command_prefix():
    return (AVX2_STAND_IN + " ") if os.environ.get("NUMBA_CPU_FEATURES") else ""


HEADING = f"## Quantization (bench_quant.py), {cpu_label()}"
EXPLANATION = (
    "The mc int8 kernel column names the route each layer took (`quant.modules.kernel_routes`). With\n"
    "AVX512-VNNI the Linear runs qgemm's vnni512 route (vpdpbusd, a 4 x 64 register tile) and the conv the\n"
    "zmm conv GEMM; held to AVX2, the Linear takes maddubs where its 7-bit input (torch's x86 qconfig)\n"
    "cannot saturate vpmaddubsw, else int16, and the conv the ymm conv GEMM on maddubs. The minicompress\n"
    "float32 column swings by 10-100x between runs at 2 threads (NumPy's BLAS threads on an overloaded\n"
    "machine); the 1-thread rows are the meaningful float comparison.")
COMMAND = command_prefix() + "python benchmarks/bench_quant.py --write"


def linear_cases(rng):
    """Linear 1024 -> 1024, static (quint8 in and out, as a converted model runs it) and dynamic (float in and
    out, activations quantized per call), at batch 64 and batch 1."""
    x_scale, x_zp, out_scale, out_zp = 1 / 64, 64, 0.05, 64
    w = rng.normal(0, 0.03, (1024, 1024)).astype(np.float32)
    b = rng.normal(0, 0.1, 1024).astype(np.float32)
    qw, t_qw = weight_pair(w)
    ours = nnq.Linear(qw, b, out_scale, out_zp, input_code_max=127)      # 7-bit inputs, as from_float records
    theirs = tnnq.Linear(1024, 1024)
    theirs.set_weight_bias(t_qw, torch.from_numpy(b))
    theirs.scale, theirs.zero_point = out_scale, out_zp
    ours_dynamic = DynamicQuantizedLinear(qw, b)
    theirs_dynamic = tnnqd.Linear(1024, 1024)
    theirs_dynamic.set_weight_bias(t_qw, torch.from_numpy(b))
    w_mc, b_mc, w_t, b_t = mc.tensor(w), mc.tensor(b), torch.from_numpy(w), torch.from_numpy(b)
    for batch in (64, 1):
        x = rng.uniform(-1, 1, (batch, 1024)).astype(np.float32)
        qx, t_qx = quantized_pair(x, x_scale, x_zp)
        xf, t_xf = mc.tensor(x), torch.from_numpy(x)
        ours_float, theirs_float = (lambda: F.linear(xf, w_mc, b_mc)), (lambda: TF.linear(t_xf, w_t, b_t))
        yield (f"linear {batch}x1024 -> 1024, static", lambda: ours(qx), lambda: theirs(t_qx), ours_float,
               theirs_float, ours)
        yield (f"linear {batch}x1024 -> 1024, dynamic", lambda: ours_dynamic(xf), lambda: theirs_dynamic(t_xf),
               ours_float, theirs_float, ours_dynamic)


def conv_cases(rng):
    x_scale, x_zp, out_scale, out_zp = 1 / 64, 64, 0.05, 64
    x = rng.uniform(-1, 1, (1, 64, 56, 56)).astype(np.float32)
    w = rng.normal(0, 0.05, (64, 64, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 64).astype(np.float32)
    qw, t_qw = weight_pair(w)
    ours = nnq.Conv2d(qw, b, out_scale, out_zp, 1, 1, 1, 1, input_code_max=127)
    theirs = tnnq.Conv2d(64, 64, 3, 1, 1)
    theirs.set_weight_bias(t_qw, torch.from_numpy(b))
    theirs.scale, theirs.zero_point = out_scale, out_zp
    qx, t_qx = quantized_pair(x, x_scale, x_zp)
    xf, t_xf = mc.tensor(x), torch.from_numpy(x)
    w_mc, b_mc, w_t, b_t = mc.tensor(w), mc.tensor(b), torch.from_numpy(w), torch.from_numpy(b)
    yield ("conv2d 3x3 1x64x56x56 -> 64", lambda: ours(qx), lambda: theirs(t_qx),
           lambda: F.conv2d(xf, w_mc, b_mc, padding=1), lambda: TF.conv2d(t_xf, w_t, b_t, padding=1), ours)


def cases():
    """(name, ours int8, torch int8, ours float32, torch float32, our int8 module): four calls on the same
    weights and inputs, and the module whose kernels (`kernel_routes`) the table names."""
    rng = np.random.default_rng(0)
    yield from linear_cases(rng)
    yield from conv_cases(rng)


def median_ms(fn):
    """Median of many calls (at least 25, and at least 0.3 s of them): the machine is shared."""
    return median_seconds(fn, repeat=25, min_time=0.3) * 1e3


def main(write=False):
    torch.backends.quantized.engine = "x86"
    rows = []
    with torch.no_grad(), mc.no_grad():
        for threads in sorted({1, THREADS}):
            set_threads(threads)
            for name, ours_int8, theirs_int8, ours_float, theirs_float, module in cases():
                t_int8, t_torch_int8 = median_ms(ours_int8), median_ms(theirs_int8)
                t_float, t_torch_float = median_ms(ours_float), median_ms(theirs_float)
                kernel = ", ".join(kernel_routes(module))
                rows.append([name, threads, kernel, f"{t_int8:.3f}", f"{t_float:.3f}", f"{t_torch_int8:.3f}",
                             f"{t_torch_float:.3f}", f"{t_int8 / t_float:.2f}", f"{t_int8 / t_torch_int8:.2f}"])
    headers = ["case", "threads", "mc int8 kernel", "mc int8 ms", "mc float32 ms", "torch int8 ms", "torch float32 ms",
               "mc int8 / mc float32", "mc int8 / torch int8"]
    print(f"qgemm route: {QGEMM_ROUTE}, Numba threading layer: {numba.threading_layer()}")
    print_table(rows, headers)
    if write:
        write_results(rows, headers)


def write_results(rows, headers):
    """Replace (or append) this script's section of RESULTS.md, leaving the other sections alone."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    section = (f"{HEADING}\n\n`{COMMAND}` (torch {torch.__version__}, x86 engine, {platform.machine()}, "
               f"qgemm route {QGEMM_ROUTE}, Numba threading layer {numba.threading_layer()}; each time the median of "
               f"at least 25 calls and 0.3 s of calls; the 2 cores were shared with other work, so single "
               f"figures are noisy). Targets: int8 at most 0.7x minicompress float32 and at most 0.8x torch's "
               f"int8.\n\n"
               + "\n".join(lines) + "\n\n" + EXPLANATION + "\n")
    path = Path(__file__).resolve().parent / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(HEADING) + r".*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# --------------------------------------------------------------------------------------------------
# The realistic edge benchmark: `create_mobile_classifier(num_classes=1000, in_channels=3)` on 224x224
# images, as ours in float32 and in int8 (fuse -> prepare -> calibrate -> convert, as the pipeline
# quantizes) and as torch's float32 and int8 twins on the same float weights (torch's int8 through FX
# graph mode on the x86 engine, which fuses conv-bn-relu and quantizes the residual adds itself). Both
# int8 models are calibrated on the same images with the same qconfig (HistogramObserver activations,
# per-channel symmetric weights). Each thread count runs in its own process, because OpenBLAS takes its
# thread count from the environment when NumPy is imported (see timing.py).

EDGE_HEADING = f"## Edge: the 224x224 mobile classifier (bench_quant.py --edge), {cpu_label()}"
EDGE_COMMAND = command_prefix() + "python benchmarks/bench_quant.py --edge --write"
EDGE_THREADS = (1, 2)
EDGE_BATCHES = {1: 30, 8: 10}                      # batch size -> timed calls per model (medians)


def edge_models(calibration_images=4, seed=0):
    """(ours float32, ours int8, torch float32, torch int8), all built from one set of float weights. The
    batch-norm statistics and affine parameters are drawn away from identity so that folding them matters."""
    import torch.ao.quantization as tq
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from minicompress import nn, quant
    from minicompress.quant.static import quantize_static

    rng = np.random.default_rng(seed)
    ours = nn.create_mobile_classifier(num_classes=1000, in_channels=3)
    for module in ours.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.data[...] = rng.uniform(-0.1, 0.1, channels)
            module.running_var.data[...] = rng.uniform(0.5, 1.5, channels)
            module.weight.data[...] = rng.uniform(0.5, 1.5, channels)
            module.bias.data[...] = rng.uniform(-0.1, 0.1, channels)
    ours.eval()
    theirs = TorchMobileClassifier(num_classes=1000, in_channels=3)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.data)) for k, v in ours.state_dict().items()})
    theirs.eval()

    calibration = [rng.standard_normal((2, 3, 224, 224)).astype(np.float32) for _ in range(calibration_images // 2)]
    ours_int8 = quantize_static(ours, [mc.tensor(x) for x in calibration], quant.get_default_qconfig("x86"))
    mapping = tq.QConfigMapping().set_global(tq.get_default_qconfig("x86"))
    prepared = prepare_fx(copy.deepcopy(theirs), mapping, example_inputs=(torch.from_numpy(calibration[0]),))
    with torch.no_grad():
        for x in calibration:
            prepared(torch.from_numpy(x))
    theirs_int8 = convert_fx(prepared)
    return ours, ours_int8, theirs, theirs_int8


def edge_worker():
    """One thread count (BENCH_THREADS): every model at every batch size; prints one JSON line of rows."""
    import warnings
    warnings.filterwarnings("ignore", module="torch")     # torch.ao's deprecation notices, on stderr
    set_threads()
    torch.backends.quantized.engine = "x86"
    ours, ours_int8, theirs, theirs_int8 = edge_models()
    rows = []
    rng = np.random.default_rng(1)
    with torch.no_grad(), mc.no_grad():
        for batch, repeat in EDGE_BATCHES.items():
            x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
            xm, xt = mc.tensor(x), torch.from_numpy(x)
            float_gap = float(np.abs(ours(xm).data - theirs(xt).numpy()).max())
            same_top1 = float(np.mean(ours_int8(xm).data.argmax(1) == theirs_int8(xt).numpy().argmax(1)))
            times = [median_seconds(fn, repeat=repeat) for fn in
                     (lambda: ours(xm), lambda: ours_int8(xm), lambda: theirs(xt), lambda: theirs_int8(xt))]
            rows.append(dict(threads=THREADS, batch=batch, repeat=repeat, times=times, float_gap=float_gap,
                             same_top1=same_top1, routes=kernel_routes(ours_int8)))
    print(json.dumps(rows))


def edge_rows(results):
    table = []
    for r in results:
        mc_float, mc_int8, th_float, th_int8 = (t * 1e3 for t in r["times"])
        table.append([r["threads"], f"{r['batch']}x3x224x224", f"{mc_float:.1f}", f"{mc_int8:.1f}", f"{th_float:.1f}",
                      f"{th_int8:.1f}", f"{mc_float / th_float:.2f}", f"{mc_int8 / th_int8:.2f}",
                      f"{mc_float / mc_int8:.2f}"])
    return table


EDGE_HEADERS = ["threads", "input", "mc float32 ms", "mc int8 ms", "torch float32 ms", "torch int8 ms",
                "mc float32 / torch float32", "mc int8 / torch int8", "mc int8 speed-up over mc float32"]


def edge_main(write=False):
    """Run `edge_worker` once per thread count in a fresh process, then print (and optionally record) one table."""
    results = []
    for threads in EDGE_THREADS:
        env = dict(os.environ, BENCH_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        done = subprocess.run([sys.executable, __file__, "--edge-worker"], env=env, check=True, capture_output=True,
                              text=True)
        results += json.loads(done.stdout.strip().splitlines()[-1])
    table = edge_rows(results)
    print_table(table, EDGE_HEADERS)
    for r in results:
        print(f"threads={r['threads']} batch={r['batch']}: max |mc float32 - torch float32| = {r['float_gap']:.2e}, "
              f"int8 top-1 agreement {r['same_top1']:.2f}")
    print("mc int8 kernels: " + routes_text(results))
    if write:
        write_edge_results(table, results)


def routes_text(results):
    return ", ".join(f"{name} x{count}" for name, count in sorted(results[0]["routes"].items()))


def write_edge_results(table, results):
    """Replace (or append) the edge section of RESULTS.md, leaving the other sections alone."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in table)) for i, h in enumerate(EDGE_HEADERS)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(EDGE_HEADERS, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in table]
    repeats = ", ".join(f"{r} calls at batch {b}" for b, r in EDGE_BATCHES.items())
    gap = max(r["float_gap"] for r in results)
    section = (f"{EDGE_HEADING}\n\n`{EDGE_COMMAND}` (torch {torch.__version__}, x86 engine, {platform.machine()}; "
               f"each time is the median of {repeats}, every model warmed up first; each thread count in its own "
               f"process, the four models side by side in it). `create_mobile_classifier(num_classes=1000, "
               f"in_channels=3)` in eval mode without grad; int8 is static (fuse -> prepare -> calibrate -> convert on "
               f"the same 4 images for both frameworks, torch through FX with the x86 qconfig). Ratios below 1 mean "
               f"minicompress is faster; the float outputs agree with torch's to {gap:.1e}. The machine's two cores "
               f"were shared with other work while this ran, so single figures are noisy; compare ratios within a "
               f"row. minicompress's int8 kernels: {routes_text(results)}.\n\n" + "\n".join(lines) + "\n")
    path = Path(__file__).resolve().parent / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(EDGE_HEADING) + r".*?(?=^## |\Z)", re.S | re.M)
    text = (pattern.sub(lambda _: section + "\n", text) if pattern.search(text)
            else text.rstrip("\n") + "\n\n" + section)
    path.write_text(text)


def edge_cpu_time():
    """The edge models on one thread, timed by this process's CPU time (median of 15 calls at batch 1, 5 at
    batch 8): on the shared machine wall times at 2 threads swung 2-10x between runs, CPU time far less."""
    import statistics
    import time
    import warnings
    warnings.filterwarnings("ignore", module="torch")
    set_threads(1)
    torch.backends.quantized.engine = "x86"
    ours, ours_int8, _, theirs_int8 = edge_models()
    rng = np.random.default_rng(1)

    def cpu_ms(fn, repeat):
        for _ in range(2):
            fn()
        times = []
        for _ in range(repeat):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return statistics.median(times) * 1e3

    with torch.no_grad(), mc.no_grad():
        for batch, repeat in ((1, 15), (8, 5)):
            x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
            xm, xt = mc.tensor(x), torch.from_numpy(x)
            f32, i8, t8 = (cpu_ms(fn, repeat) for fn in (lambda: ours(xm), lambda: ours_int8(xm), lambda: theirs_int8(xt)))
            print(f"batch {batch}: mc float32 {f32:.1f} ms, mc int8 {i8:.1f} ms, torch int8 {t8:.1f} ms (CPU time, 1 thread); "
                  f"mc int8 speed-up over mc float32 {f32 / i8:.2f}x, mc int8 / torch int8 {i8 / t8:.2f}")
    print("mc int8 kernels: " + ", ".join(f"{k} x{v}" for k, v in sorted(kernel_routes(ours_int8).items())))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put the table in benchmarks/RESULTS.md")
    parser.add_argument("--edge", action="store_true",
                        help="the 224x224 mobile classifier (ours and torch's, float32 and int8) at 1 and 2 threads")
    parser.add_argument("--edge-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--edge-cpu-time", action="store_true",
                        help="the mobile classifier on one thread, by CPU time (steadier on a shared machine)")
    args = parser.parse_args(sys.argv[1:])
    if args.edge_worker:
        edge_worker()
    elif args.edge_cpu_time:
        edge_cpu_time()
    elif args.edge:
        edge_main(args.write)
    else:
        main(args.write)
