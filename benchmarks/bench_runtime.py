"""minicompress.onnx.InferenceSession against onnxruntime.InferenceSession, at 1 and 2 threads, on the same
inputs in one run: the published PP-OCR models of the rapidocr wheel and the mobile classifiers.

    python benchmarks/bench_runtime.py [--repeat 10] [--models det,cls,rec,mobile,digits] [--threads 1,2]
                                       [--profile det] [--plan-profile det]

    det      PP-OCRv4 text detector (DBNet, ch_PP-OCRv4_det_infer.onnx), 1 x 3 x 480 x 480 (a page of dark bars)
    cls      PP-OCR text-direction classifier (ch_ppocr_mobile_v2.0_cls_infer.onnx), batch 1 and 6 (rapidocr's
             cls_batch_num) x 3 x 48 x 192
    rec      PP-OCRv4 text recognizer (SVTR-LCNet, ch_PP-OCRv4_rec_infer.onnx), batch 1 and 6 x 3 x 48 x 320 (lines
             of dark bars)
    mobile   `nn.create_mobile_classifier(1000, 3)` (non-trivial BN statistics) exported with
             `minicompress.onnx.export`, 1 x 3 x 224 x 224
    digits   `nn.create_mobile_classifier(10, 1)`, the digits classifier, batch 1 and 64 x 1 x 8 x 8

Both sides run through `session.run(None, {name: x})` with `intra_op_num_threads` = 1 or 2 (minicompress's
session runs the compiled plan, `minicompress.compile`; "interpreted" is the session's GraphModule run node by
node, under no_grad, at the same threads); onnxruntime's
idle threads do not spin (`session.intra_op.allow_spinning` 0) and minicompress's wait passively
(OMP_WAIT_POLICY=PASSIVE, set by timing.py), so neither takes the cores from the other between calls.
The classifiers get standard normal inputs; "max rel diff" is max |ours - onnxruntime| / max |onnxruntime|
over the first output. Each figure is the median of `--repeat` calls after 3 warm-up calls, the three sides
called in turn (interleaved); the ratios are minicompress / onnxruntime (below 1: minicompress is faster). Needs `pip install --no-deps rapidocr-onnxruntime==1.4.4` for det, cls, rec.
--profile MODEL prints where minicompress's time goes per node kind on that model (1 thread), --plan-profile MODEL
per step kind of its compiled plan.
"""
from timing import node_profile, print_table  # first: it sets the thread environment

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import minicompress as mc
import minicompress.onnx as mco
from minicompress import nn
from minicompress.kernels.threads import thread_count

THREAD_COUNTS = (1, 2)


def rapidocr_model(name):
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        raise SystemExit("the PP-OCR models need: python -m pip install --no-deps rapidocr-onnxruntime==1.4.4")
    return (Path(spec.origin).parent / "models" / name).read_bytes()


def mobile_classifier(num_classes, channels, size, seed=0):
    """The classifier exported by minicompress.onnx.export, with BN statistics that make folding matter."""
    rng = np.random.default_rng(seed)
    mc.manual_seed(seed)
    model = nn.create_mobile_classifier(num_classes=num_classes, in_channels=channels).eval()
    state = model.state_dict()
    for name, value in state.items():
        value = np.asarray(value.data if hasattr(value, "data") else value)
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif name.endswith("running_mean"):
            state[name] = rng.normal(0, 0.1, value.shape).astype(np.float32)
    model.load_state_dict(state)
    return mco.export(model, mc.tensor(np.zeros((1, channels, size, size), np.float32))).SerializeToString()


def text_page(shape, seed=0):
    """Dark bars (-1) on white (1) in PP-OCR's normalization: an input on which the detector finds text
    (on noise its probabilities all sit near 0)."""
    rng = np.random.default_rng(seed)
    x = np.ones(shape, np.float32)
    height, width = shape[2:]
    for n in range(shape[0]):
        for _ in range(max(2, height * width // 8000)):
            h, w = rng.integers(4, max(5, height // 4)), rng.integers(8, max(9, width // 3))
            top, left = rng.integers(0, height - h), rng.integers(0, width - w)
            x[n, :, top:top + h, left:left + w] = -1.0
    return x


def standard_normal(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


MODELS = {   # name: (title, model bytes, [input shapes], input maker)
    "det": ("PP-OCRv4 det", lambda: rapidocr_model("ch_PP-OCRv4_det_infer.onnx"), [(1, 3, 480, 480)], text_page),
    "cls": ("PP-OCR cls", lambda: rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx"),
            [(1, 3, 48, 192), (6, 3, 48, 192)], standard_normal),
    "rec": ("PP-OCRv4 rec", lambda: rapidocr_model("ch_PP-OCRv4_rec_infer.onnx"), [(1, 3, 48, 320), (6, 3, 48, 320)],
            text_page),
    "mobile": ("mobile classifier", lambda: mobile_classifier(1000, 3, 224), [(1, 3, 224, 224)], standard_normal),
    "digits": ("digits classifier", lambda: mobile_classifier(10, 1, 8), [(1, 1, 8, 8), (64, 1, 8, 8)],
               standard_normal),
}


def sessions(data, threads):
    ours_options = mco.SessionOptions()
    ours_options.intra_op_num_threads = threads
    theirs_options = ort.SessionOptions()
    theirs_options.intra_op_num_threads = threads
    theirs_options.inter_op_num_threads = 1
    theirs_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return (mco.InferenceSession(data, ours_options),
            ort.InferenceSession(data, theirs_options, providers=["CPUExecutionProvider"]))


def interleaved_medians(fns, repeat, warmup=3):
    """Median seconds of each of `fns`, called in turn (one call of each per round) so that a change in the
    machine's load falls on all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def bench(key, repeat, thread_counts=THREAD_COUNTS):
    title, make, shapes, inputs = MODELS[key]
    data = make()
    rows = []
    for shape in shapes:
        x = inputs(shape)
        for threads in thread_counts:
            ours, theirs = sessions(data, threads)
            name = ours.get_inputs()[0].name
            feed = {name: x}
            expected = theirs.run(None, feed)[0]
            got = ours.run(None, feed)[0]           # compiles the plan of this signature
            diff = float(np.abs(got - expected).max()) / max(float(np.abs(expected).max()), 1e-30)
            graph = ours.graph_module

            def interpreted():
                with mc.no_grad(), thread_count(threads):
                    graph.run(x)
            t_ours, t_interpreted, t_theirs = interleaved_medians(
                [lambda: ours.run(None, feed), interpreted, lambda: theirs.run(None, feed)], repeat)
            rows.append([title, "x".join(map(str, shape)), threads, f"{diff:.1e}", f"{t_ours * 1e3:.2f}",
                         f"{t_interpreted * 1e3:.2f}", f"{t_theirs * 1e3:.2f}", f"{t_ours / t_theirs:.2f}",
                         f"{t_interpreted / t_theirs:.2f}"])
    return rows


def plan_profile(key, repeat):
    """ms per step kind of the compiled plan (1 thread), summed over one call: where the plan's time goes."""
    title, make, shapes, inputs = MODELS[key]
    x = inputs(shapes[0])
    compiled = mc.compile(mco.load(make()).eval(), (x,))
    plan = next(iter(compiled.plans.values()))
    with thread_count(1):
        plan(x)
        steps = plan.profile(x, repeat=repeat)
    by_kind = {}
    for seconds, step in steps:
        kind = step.label + (" (interpreted)" if step.interpreted else "")
        count, total = by_kind.get(kind, (0, 0.0))
        by_kind[kind] = (count + 1, total + seconds)
    print(f"{title} {'x'.join(map(str, shapes[0]))}, compiled plan, 1 thread: ms per step kind, one call "
          f"(total {sum(s for s, _ in steps) * 1e3:.1f} ms)")
    print_table([[k, n, f"{t * 1e3:.2f}"] for k, (n, t) in sorted(by_kind.items(), key=lambda kv: -kv[1][1])],
                ["step", "count", "ms"])


def profile(key, repeat):
    title, make, shapes, inputs = MODELS[key]
    session = mco.InferenceSession(make())
    x = inputs(shapes[0])
    import numba
    with mc.no_grad(), thread_count(1):
        times = node_profile(session.graph_module, x, repeat)
    print(f"{title} {'x'.join(map(str, shapes[0]))}, 1 thread (Numba threads {numba.get_num_threads()} outside): "
          f"ms per node kind, one call")
    print_table([[k, f"{v:.2f}"] for k, v in times.items()], ["node", "ms"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--models", default="det,cls,rec,mobile,digits")
    parser.add_argument("--profile", default=None, help="a model name: print the time per node kind")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--plan-profile", default=None, help="a model name: print the compiled plan's time per step")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.repeat)
        return
    if args.plan_profile:
        plan_profile(args.plan_profile, args.repeat)
        return
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    rows = []
    for key in args.models.split(","):
        rows += bench(key, args.repeat, [int(t) for t in args.threads.split(",")])
    print_table(rows, ["model", "input", "threads", "max rel diff", "compiled ms", "interpreted ms", "onnxruntime ms",
                       "compiled / ort", "interpreted / ort"])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
