"""`minicompress inspect` and `minicompress predict`: what a model file holds, and what it predicts.

    minicompress inspect MODEL | MODEL.onnx | MODEL.tflite
    minicompress predict MODEL | MODEL.onnx | MODEL.tflite INPUT.npy [--raw]       (or --input INPUT.npy)
"""
from __future__ import annotations

import argparse

import numpy as np

from .common import CommandError, input_spec, load_model_file
from .onnx import load_onnx_file, load_onnx_session


def add_parsers(sub):
    ins = sub.add_parser("inspect", help="layers, shapes, dtypes, sparsity and bytes of a model file")
    ins.add_argument("model", help="a model file written by minicompress, an .onnx or a .tflite file")
    ins.set_defaults(run=cmd_inspect)
    pre = sub.add_parser(
        "predict", help="class probabilities for the samples in a .npy file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Class probabilities for the samples in INPUT, a .npy array (np.save) of real numbers.\n\n"
                    "INPUT holds one sample of the model's input shape, a batch (batch, *shape), or rows of\n"
                    "prod(shape) values. A model written by `minicompress optimize` records the input it was\n"
                    "trained on (`minicompress inspect` shows it): shape (1, 8, 8), float32 values in [0, 1],\n"
                    "the UCI digits' pixel counts 0..16 divided by 16. Values outside that range are refused;\n"
                    "give raw pixel counts with --raw and they are scaled as in training. An empty batch is an\n"
                    "error.")
    pre.add_argument("model", help="a model file written by minicompress (optimize, or minicompress.io.save), or "
                                    "an .onnx file (its input shape is the graph's, without the batch dimension; where "
                                    "a dimension is dynamic, the array's), or a .tflite file (run the batch it stores "
                                    "at a time; integer inputs take their codes, integer outputs are dequantized)")
    pre.add_argument("input", nargs="?", default=None, help="a .npy array of samples (see above)")
    pre.add_argument("--input", dest="input_option", default=None, metavar="INPUT", help="the same as INPUT")
    pre.add_argument("--raw", action="store_true",
                     help="INPUT holds raw values (digits: pixel counts 0..16); apply the model file's scaling")
    pre.set_defaults(run=cmd_predict)


def cmd_inspect(args):
    from minicompress.cli.summary import describe_model
    from minicompress.cli.onnx import describe_onnx, is_onnx_path
    from minicompress.cli.tflite import describe_tflite, is_tflite_path, load_tflite_file
    if is_tflite_path(args.model):
        model, tables = load_tflite_file(args.model)
        print(describe_tflite(model, tables, args.model))
        return 0
    if is_onnx_path(args.model):
        model, proto = load_onnx_file(args.model)
        print(describe_onnx(model, proto, args.model))
        return 0
    model = load_model_file(args.model)
    spec = input_spec(args.model)
    try:
        text = describe_model(model)
    except Exception as exc:  # a crafted file can hold a model that loads but cannot be described
        raise CommandError(f"{args.model}: the model cannot be described ({type(exc).__name__}: {exc})")
    print(text)
    if spec is not None:
        print(f"input: {_describe_spec(spec)}")
    return 0


def _describe_spec(spec):
    text = f"shape {tuple(spec['shape'])} {spec.get('dtype', 'float32')}"
    if spec.get("range"):
        text += f", values in [{spec['range'][0]:g}, {spec['range'][1]:g}]"
    if spec.get("scale") and spec.get("raw_range"):
        text += (f" (raw values in [{spec['raw_range'][0]:g}, {spec['raw_range'][1]:g}] times {spec['scale']:g}: "
                 f"pass --raw to predict)")
    return text + (f"; {spec['description']}" if isinstance(spec.get("description"), str) else "")


def _batch(x, shape):
    """`x` as a (batch, *shape) array: one sample of `shape`, a batch of them, or rows of prod(shape)
    values (flattened images)."""
    if shape is None:
        if x.ndim < 2:
            raise CommandError(f"input has shape {x.shape}; expected (batch, ...): the model file records no "
                               f"input shape")
        return x
    size = int(np.prod(shape))
    if x.shape == shape:
        return x[None]
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
        return x
    if x.ndim in (1, 2) and x.shape[-1] == size and size > 1:
        return x.reshape((-1,) + shape)
    raise CommandError(f"input has shape {x.shape}; expected {shape}, (batch, {', '.join(map(str, shape))}) "
                       f"or (batch, {size})")


def _preprocess(x, spec, raw):
    """Apply (--raw) or check the scaling the model was trained with."""
    lo, hi = float(x.min()), float(x.max())
    if raw:
        if spec is None or spec.get("scale") is None or spec.get("raw_range") is None:
            raise CommandError("--raw: the model file records no input scaling; give the values the model expects")
        r_lo, r_hi = spec["raw_range"]
        if lo < r_lo or hi > r_hi:
            raise CommandError(f"--raw: input values span [{lo:g}, {hi:g}], outside the raw range [{r_lo:g}, {r_hi:g}]")
        return x * np.float32(spec["scale"])
    if spec is None or spec.get("range") is None:
        return x
    m_lo, m_hi = spec["range"]
    slack = 1e-6 * (m_hi - m_lo)
    if lo < m_lo - slack or hi > m_hi + slack:
        message = (f"input values span [{lo:g}, {hi:g}], outside [{m_lo:g}, {m_hi:g}], the range the model was "
                   f"trained on")
        raw_range = spec.get("raw_range")
        if raw_range and spec.get("scale") and raw_range[0] <= lo and hi <= raw_range[1]:
            message += (f"; they look like raw values in [{raw_range[0]:g}, {raw_range[1]:g}]: pass --raw to "
                        f"multiply them by {spec['scale']:g}")
        raise CommandError(message)
    return x


def cmd_predict(args):
    import minicompress as mc
    import minicompress.functional as F
    from minicompress.cli.onnx import is_onnx_path, sample_shape
    from minicompress.cli.tflite import is_tflite_path, load_tflite_file, predict_logits, predict_shape
    from minicompress.onnx.session import InvalidArgument
    if args.input is not None and args.input_option is not None:
        raise CommandError("give the input once: INPUT or --input INPUT, not both")
    args.input = args.input if args.input is not None else args.input_option
    if args.input is None:
        raise CommandError("predict needs an input: INPUT.npy or --input INPUT.npy")
    session = tables = None
    if is_tflite_path(args.model):
        model, tables = load_tflite_file(args.model)
        spec, (shape, _) = None, predict_shape(model, args.model)
    elif is_onnx_path(args.model):
        session, _ = load_onnx_session(args.model, CommandError)
        model = session.graph_module
        spec, shape = None, sample_shape(model, args.model, None, CommandError, required=False)
    else:
        model = load_model_file(args.model)
        spec = input_spec(args.model)
        shape = tuple(spec["shape"]) if spec is not None else getattr(model, "input_shape", None)
    if shape is not None:
        if not (isinstance(shape, tuple) and shape and all(isinstance(n, int) and n > 0 for n in shape)):
            raise CommandError(f"{args.model}: the model file's input_shape {shape!r} is not a tuple of positive ints")
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CommandError(f"cannot read {args.input} as a .npy array: {exc}")
    if not isinstance(x, np.ndarray):  # an .npz archive
        x.close()
        raise CommandError(f"{args.input} is a .npz archive; expected one .npy array (np.save)")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise CommandError(f"input must hold real numbers, got dtype {x.dtype}")
    x = _batch(x, shape)
    if x.shape[0] == 0:
        raise CommandError(f"{args.input} holds no samples (an empty batch of shape {x.shape})")
    if not np.isfinite(x).all():
        raise CommandError("input must hold finite numbers (it has NaN or infinity)")
    x = _preprocess(x.astype(np.float32), spec, args.raw)
    if type(model).__name__ == "Detector":
        from minicompress.cli.detect import print_detections
        return print_detections(model, x)
    model.eval()
    try:
        if tables is not None:                      # a TFLite file: its first output, as LiteRT runs it
            logits = mc.tensor(predict_logits(model, tables, x))
        elif session is not None:                   # an ONNX file: its first output, as onnxruntime runs it
            logits = mc.tensor(session.run(None, {session.get_inputs()[0].name: x})[0])
        else:
            with mc.no_grad():
                logits = model(mc.tensor(x))
                logits = logits[0] if isinstance(logits, tuple) else logits       # a graph's first output
                logits = logits if isinstance(logits, mc.Tensor) else logits.dequantize()
    except (InvalidArgument, CommandError) as exc:   # the feed refused (rank, fixed dims, codes), naming the input
        raise CommandError(str(exc))
    except Exception as exc:  # a crafted file can hold a model that loads but cannot run
        raise CommandError(f"the model in {args.model} failed on this input ({type(exc).__name__}: {exc})")
    if logits.ndim != 2:
        raise CommandError(f"the model's output has shape {logits.shape}; predict reads (batch, classes) logits")
    with mc.no_grad():
        probs = F.softmax(logits, dim=1).numpy()
    np.set_printoptions(precision=4, suppress=True)
    for i, p in enumerate(probs):
        print(f"sample {i}: class {int(p.argmax())}  probabilities {p}")
    return 0


