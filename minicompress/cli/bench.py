"""`minicompress bench`: latency of a model file (an .onnx file: beside onnxruntime's).

    minicompress bench MODEL | MODEL.onnx [--batch-sizes 1,64] [--input-shape C,H,W]
"""
from __future__ import annotations

from .common import CommandError, load_model_file
from .onnx import load_onnx_file


def add_parsers(sub):
    ben = sub.add_parser("bench", help="latency of a model file at batch 1 and 64 (an .onnx file: onnxruntime's too)")
    ben.add_argument("model", help="a model file written by minicompress, or an .onnx file")
    ben.add_argument("--batch-sizes", default="1,64")
    ben.add_argument("--input-shape", default=None, help="C,H,W when the model file records none")
    ben.set_defaults(run=cmd_bench)


def _input_shape(model, given):
    if given:
        try:
            return tuple(int(v) for v in given.split(","))
        except ValueError:
            raise CommandError(f"--input-shape must be comma-separated integers, got {given!r}")
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise CommandError("the model file records no input shape; pass --input-shape C,H,W")
    return tuple(shape)


def _batch_sizes(text):
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise CommandError(f"--batch-sizes must be comma-separated integers, got {text!r}")
    if min(batches) < 1:
        raise CommandError("--batch-sizes must be positive")
    return batches


def cmd_bench(args):
    from minicompress.training.latency import latency_per_image
    from minicompress.cli.onnx import bench_onnx, is_onnx_path, sample_shape
    batches = _batch_sizes(args.batch_sizes)
    if is_onnx_path(args.model):
        model, proto = load_onnx_file(args.model)
        return bench_onnx(model, proto, sample_shape(model, args.model, args.input_shape, CommandError), batches,
                          CommandError)
    model = load_model_file(args.model)
    shape = _input_shape(model, args.input_shape)
    from minicompress.kernels.qgemm import QGEMM_ROUTE
    print(f"int8 GEMM route: {QGEMM_ROUTE} (MINICOMPRESS_QGEMM overrides it)")
    for batch, seconds in latency_per_image(model, shape, batches).items():
        print(f"batch {batch:4d}: {seconds * 1e3:.4f} ms/image, {seconds * batch * 1e3:.3f} ms/batch")
    from minicompress.quant.modules import kernel_routes
    routes = kernel_routes(model)
    if routes:
        print("int8 kernels taken: " + ", ".join(f"{name} x{count}" for name, count in sorted(routes.items())))
    return 0


