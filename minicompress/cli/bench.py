"""`minicompress bench`: latency of a model file (an .onnx file: beside onnxruntime's; a .tflite file: beside
LiteRT's, at the input shapes it stores).

    minicompress bench MODEL | MODEL.onnx [--batch-sizes 1,64] [--input-shape C,H,W | N,C,H,W] [--threads N]
    minicompress bench MODEL.tflite [--threads N]

--threads N runs minicompress's Numba kernels on N threads for the timing (OpenBLAS on one:
`kernels.threads.thread_count`), and an .onnx file's onnxruntime session with intra_op_num_threads=N and
its spinning switched off, so both sides get the same cores and neither burns them while idle; without
it, Numba's current thread count is used for both, and 1 for a .tflite file (LiteRT's interpreter's default,
`num_threads=1`).
"""
from __future__ import annotations

from .common import CommandError, given_sample_shape, load_model_file


def add_parsers(sub):
    ben = sub.add_parser("bench", help="latency of a model file at batch 1 and 64 (an .onnx file: onnxruntime's too; "
                                       "a .tflite file: LiteRT's too, at its stored input shapes)")
    ben.add_argument("model", help="a model file written by minicompress, an .onnx or a .tflite file")
    ben.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes (default: 1,64)")
    ben.add_argument("--input-shape", default=None, help="one sample's C,H,W, or the full N,C,H,W (the batch then comes from --batch-sizes)")
    ben.add_argument("--threads", type=int, default=None,
                     help="threads for minicompress and onnxruntime (LiteRT) alike (default: Numba's current count; "
                          ".tflite: 1)")
    ben.set_defaults(run=cmd_bench)


def _input_shape(model, given):
    """One sample's shape: --input-shape (one sample's dims, or the full shape when the model records its
    input shape `(C, H, W)`; then C must match, H and W may differ), else the recorded `input_shape`."""
    shape = getattr(model, "input_shape", None)
    if given:
        return given_sample_shape(given, None if shape is None else [None, shape[0]] + [None] * (len(shape) - 1))
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


def _threads(given):
    import numba
    if given is None:
        return numba.get_num_threads()
    if given < 1:
        raise CommandError(f"--threads must be a positive integer, got {given}")
    if given > numba.config.NUMBA_NUM_THREADS:
        raise CommandError(f"--threads {given}: Numba's pool has {numba.config.NUMBA_NUM_THREADS} threads "
                           "(NUMBA_NUM_THREADS, by default the CPU count)")
    return given


def cmd_bench(args):
    from minicompress.cli.onnx import bench_onnx, is_onnx_path, load_onnx_session, sample_shape
    from minicompress.cli.tflite import bench_tflite, is_tflite_path
    from minicompress.kernels.threads import thread_count
    from minicompress.training.latency import latency_per_image
    if is_tflite_path(args.model):
        return bench_tflite(args, 1 if args.threads is None else _threads(args.threads))
    batches = _batch_sizes("1,64" if args.batch_sizes is None else args.batch_sizes)
    threads = _threads(args.threads)
    if is_onnx_path(args.model):
        session, proto = load_onnx_session(args.model, CommandError, threads)
        shape = sample_shape(session.graph_module, args.model, args.input_shape, CommandError)
        return bench_onnx(session, proto, shape, batches, threads, CommandError)
    model = load_model_file(args.model)
    shape = _input_shape(model, args.input_shape)
    from minicompress.kernels.qgemm import QGEMM_ROUTE
    print(f"int8 GEMM route: {QGEMM_ROUTE} (MINICOMPRESS_QGEMM overrides it)")
    print(f"threads: {threads} (Numba; OpenBLAS 1)")
    with thread_count(threads):
        latencies = latency_per_image(model, shape, batches)
    for batch, seconds in latencies.items():
        print(f"batch {batch:4d}: {seconds * 1e3:.4f} ms/image, {seconds * batch * 1e3:.3f} ms/batch")
    from minicompress.quant.modules import kernel_routes
    routes = kernel_routes(model)
    if routes:
        print("int8 kernels taken: " + ", ".join(f"{name} x{count}" for name, count in sorted(routes.items())))
    return 0


