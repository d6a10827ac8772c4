"""Operator-by-operator comparison of minicompress and LiteRT on one TFLite model (`minicompress check`).

LiteRT runs the file twice on the same inputs, both with `experimental_preserve_all_tensors=True` so that
every intermediate tensor can be read after `invoke()`: on its reference kernels
(`OpResolverType.BUILTIN_REF`, the spec as code) and on its default ones (the optimized kernels, XNNPACK
included, that an application runs). minicompress's graph records which of its values holds each TFLite
tensor (`model.tflite_tensors`); NCHW values are transposed back to the file's NHWC. In the file's operator
order, each operator output gets

    max_abs = max |mc - ref|,  max_rel = max_abs / max |ref|     (integer tensors: in steps, |codes| apart)
    spread  = max |default - ref|, LiteRT's own disagreement with itself on that tensor

and diverges when

    float:   max_abs > max(atol + rtol * max |ref|, 2 * spread)    (a tensor that amplifies rounding
             differs more between LiteRT's two kernel sets than 1e-4; the bar is then twice that)
    integer: max_abs > 0 steps                                     (the reference kernels are exact)

The first operator that diverges is where to look: every later disagreement may only inherit it.

Tensors folded into constants when the graph is built (DEQUANTIZE and DENSIFY of weights) are not compared
(the report counts them; the operators that read them are compared); LiteRT's delegate folds them too and
leaves them unwritten, so an operator whose inputs are all constants has no spread ("-").
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import numpy as np

from . import schema
from .importer import load, read

TO_NHWC = (0, 2, 3, 1)
FOLDED = "folded at import"


@dataclass
class TensorDiff:
    op_index: int
    op: str
    tensor: str
    dtype: str
    max_abs: float              # integer tensors: steps
    max_rel: float
    spread: float | None        # LiteRT default vs reference kernels; None: not computed at run time
    tolerance: float
    diverged: bool
    note: str = ""

    @property
    def integer(self):
        return np.dtype(self.dtype).kind in "iu"


def litert_interpreter():
    """LiteRT's `Interpreter` and `OpResolverType`, or ImportError saying which extra installs them."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise ImportError(f"running LiteRT needs the ai-edge-litert package: pip install 'minicompress[tflite]' "
                          f"({exc})") from None
    return Interpreter, OpResolverType


@contextlib.contextmanager
def quiet_stderr():
    """LiteRT's C++ runtime prints notes ("Created TensorFlow Lite XNNPACK delegate") on file descriptor 2:
    they are sent to /dev/null while it builds an interpreter and runs."""
    try:
        saved = os.dup(2)
    except OSError:                 # no descriptor 2 to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # preserve_all_tensors' note that it is for debugging
                yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def litert_tensors(data, inputs, reference):
    """(interpreter after one run on `inputs` with every tensor kept, its tensors readable by index): on the
    reference kernels (BUILTIN_REF) or the default ones."""
    Interpreter, OpResolverType = litert_interpreter()
    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    with quiet_stderr():
        interpreter = Interpreter(model_content=data, experimental_op_resolver_type=resolver,
                                  experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
        for detail, x in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    return interpreter


def example_inputs(model, seed=0):
    """One array per graph input: float N(0, 1), integer codes uniform over their type's range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in model.inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, int(info.max) + 1, shape).astype(dtype))
        else:
            arrays.append(np.ones(shape, dtype))
    return arrays


def checked_inputs(model, inputs, where="input"):
    """`inputs` as the arrays the graph takes: one per input, its shape, float arrays cast to a float input's
    type, integer arrays (within range) to an integer input's; ValueError naming the input otherwise."""
    names = [spec["name"] for spec in model.inputs]
    if len(inputs) != len(names):
        raise ValueError(f"the model takes {len(names)} input(s) {names}, got {len(inputs)}")
    arrays = []
    for spec, x in zip(model.inputs, inputs):
        x = np.asarray(x)
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        if len(x.shape) != len(shape) or any(d is not None and d != n for d, n in zip(shape, x.shape)):
            raise ValueError(f"{where} {spec['name']!r} has shape {list(x.shape)}; the model takes {list(shape)}")
        if dtype.kind == "f" and x.dtype.kind not in "fiu" or dtype.kind in "iu" and x.dtype.kind not in "iu":
            raise ValueError(f"{where} {spec['name']!r} holds {x.dtype} values; the model takes {dtype}")
        if dtype.kind in "iu" and x.size:
            info = np.iinfo(dtype)
            if x.min() < info.min or x.max() > info.max:
                raise ValueError(f"{where} {spec['name']!r} holds values in [{x.min()}, {x.max()}], outside "
                                 f"{dtype}'s [{info.min}, {info.max}]")
        arrays.append(np.ascontiguousarray(x.astype(dtype)))
    return arrays


def _ours(model, inputs):
    """{TFLite tensor index: array as the file lays it out} of one run of `model`."""
    from ..autograd import no_grad
    with no_grad():
        _, env = model.run(*inputs, keep="all")
    values = {}
    for name, (index, layout) in model.tflite_tensors.items():
        if name in env:
            array = np.asarray(env[name].data)
            values[index] = array.transpose(TO_NHWC) if layout == "nchw" else array
    return values


def difference(got, expected):
    """(max |got - expected|, max |expected|): NaN where both are NaN counts as equal, NaN on one side as
    infinite; integers as exact steps."""
    if expected.dtype.kind in "iu":
        diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
        return float(diff.max(initial=0)), float(np.abs(expected.astype(np.int64)).max(initial=0))
    a, b = got.astype(np.float64), expected.astype(np.float64)
    err = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    err = np.where(np.isnan(err), np.inf, err)
    scale = float(np.nanmax(np.abs(b))) if np.isfinite(b).any() else 0.0
    return float(err.max(initial=0)), scale


def compare(source, inputs=None, rtol=1e-4, atol=1e-5, seed=0, model=None):
    """[TensorDiff] for every operator output of the file at `source` (a path or bytes), in operator order,
    between minicompress and LiteRT's reference kernels, with LiteRT's default kernels' spread (module
    docstring). `model`: the GraphModule to compare (default `load(source)`; e.g. one a pass has rewritten,
    keeping its `tflite_tensors`); `inputs`: one array per input (default `example_inputs`)."""
    tables, _ = read(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(source, "rb") as f:
            data = f.read()
    model = load(data) if model is None else model
    inputs = example_inputs(model, seed) if inputs is None else checked_inputs(model, inputs)
    ours = _ours(model, inputs)
    reference = litert_tensors(data, inputs, reference=True)
    default = litert_tensors(data, inputs, reference=False)
    sub = tables["subgraphs"][0]
    tensors = sub["tensors"]
    constant = {i for i, t in enumerate(tensors) if 0 < t["buffer"] < len(tables["buffers"])
                and tables["buffers"][t["buffer"]].size}
    diffs = []
    for index, op in enumerate(sub["operators"]):
        code = tables["opcodes"][op["opcode_index"]]
        op_name = code["custom_code"] if code["code"] == schema.CUSTOM else schema.operator_name(code["code"])
        static = all(i < 0 or i in constant for i in op["inputs"])     # computed once, before the first run
        if static:
            constant.update(op["outputs"])
        for out in op["outputs"]:
            expected = reference.get_tensor(out)
            name, dtype = tensors[out]["name"] or f"tensor_{out}", expected.dtype.name
            if out not in ours:
                diffs.append(TensorDiff(index, op_name, name, dtype, 0.0, 0.0, None, 0.0, False, FOLDED))
                continue
            got = ours[out]
            if got.shape != expected.shape or got.dtype != expected.dtype:
                diffs.append(TensorDiff(index, op_name, name, dtype, np.inf, np.inf, None, 0.0, True,
                                        f"{got.dtype} {list(got.shape)} != LiteRT's {expected.dtype} "
                                        f"{list(expected.shape)}"))
                continue
            max_abs, scale = difference(got, expected)
            spread = None if static else difference(default.get_tensor(out), expected)[0]
            if expected.dtype.kind in "iu":
                tolerance = 0.0
            else:
                tolerance = max(atol + rtol * scale, 2 * (spread or 0.0))
            diffs.append(TensorDiff(index, op_name, name, dtype, max_abs, max_abs / scale if scale else max_abs,
                                    spread, tolerance, max_abs > tolerance))
    return diffs


def _cut(text, width):
    return text if len(text) <= width else text[: width // 2 - 1] + "..." + text[-(width - width // 2 - 2):]


def _amount(value, integer):
    if value is None:
        return "-"
    if integer:
        return "inf" if value == np.inf else f"{int(value)} step" + ("" if value == 1 else "s")
    return f"{value:.3e}"


def format_report(diffs, rtol, atol):
    """The table (one line per operator output) and the first diverging TensorDiff, or None."""
    width = min(max([len(d.tensor) for d in diffs if d.note != FOLDED] + [6]), 48)
    header = (f"{'#':>4}  {'operator':<20} {'output':<{width}} {'dtype':<8} {'max abs':>11} {'max rel':>10} "
              f"{'LiteRT spread':>14}")
    lines = ["max abs / max rel: minicompress vs LiteRT's reference kernels (BUILTIN_REF); LiteRT spread: its "
             + "default kernels vs the reference ones",
             f"tolerance: float max(atol {atol:g} + rtol {rtol:g} * max |ref|, 2 * spread); integer 0 steps", header]
    compared = [d for d in diffs if d.note != FOLDED]
    for d in compared:
        rel = "-" if d.integer else f"{d.max_rel:.3e}"
        flag = "  <-- diverges" if d.diverged else ""
        lines.append(f"{d.op_index:>4}  {d.op:<20} {_cut(d.tensor, width):<{width}} {d.dtype:<8} "
                     f"{_amount(d.max_abs, d.integer):>11} {rel:>10} {_amount(d.spread, d.integer):>14}{flag}"
                     + (f"  ({d.note})" if d.note else ""))
    folded = len(diffs) - len(compared)
    if folded:
        lines.append(f"{folded} operator output(s) folded into constants at import (DEQUANTIZE / DENSIFY of "
                     "weights): not compared")
    first = next((d for d in diffs if d.diverged), None)
    if first is None:
        lines.append(f"all {len(compared)} operator outputs agree with LiteRT's reference kernels "
                     f"(rtol={rtol:g}, atol={atol:g}; integer: 0 steps)")
    else:
        lines.append(f"first divergence: operator {first.op_index} {first.op}, output tensor {first.tensor!r}: "
                     f"max abs error {_amount(first.max_abs, first.integer)}"
                     + ("" if first.integer else f", max rel error {first.max_rel:.3e}, tolerance {first.tolerance:.3e}")
                     + f", LiteRT's spread {_amount(first.spread, first.integer)}")
    return "\n".join(lines), first


def check_command(args, model=None):
    """`minicompress check MODEL.tflite [--input x.npy ...] [--rtol R] [--atol A]`: exit 0 when every
    operator output agrees, 1 at the first divergence. `model`: the file's graph when already loaded."""
    inputs = None
    if args.input:
        for path in args.input:
            if not os.path.isfile(path):
                raise ValueError(f"--input {path!r}: no such file")
        inputs = [np.load(path, allow_pickle=False) for path in args.input]
    diffs = compare(args.model, inputs, args.rtol, args.atol, model=model)
    text, first = format_report(diffs, args.rtol, args.atol)
    print(text)
    return 0 if first is None else 1
