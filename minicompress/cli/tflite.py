""".tflite files in `minicompress inspect`: the file is read with `minicompress.tflite.load` (a GraphModule)
and described: schema version, inputs and outputs (NHWC as stored), operator counts by TFLite name, constant
bytes by tensor type (sparse ones counted apart), and the node listing of the loaded graph.

Every problem with the file (not TFLite, an operator minicompress does not implement, the flatbuffers
package missing) is a `CommandError` raised before any work starts.
"""
from __future__ import annotations

import os

from .common import CommandError


def is_tflite_path(path):
    return os.fspath(path).lower().endswith(".tflite")


def load_tflite_file(path):
    """(GraphModule, the file's tables) of the .tflite file at `path`, or CommandError naming the problem."""
    if not os.path.isfile(path):
        raise CommandError(f"no such TFLite file: {path}")
    try:
        from ..graph.registry import UnsupportedOperatorError
        from ..tflite import TFLiteFormatError, load, read
    except ImportError as exc:
        raise CommandError(f"reading .tflite files needs the flatbuffers package: pip install 'minicompress[tflite]' "
                           f"({exc})")
    try:
        tables, _ = read(path)
        model = load(path)
    except TFLiteFormatError as exc:
        raise CommandError(str(exc))
    except UnsupportedOperatorError as exc:
        raise CommandError(f"unsupported by minicompress: {exc}")
    return model, tables


def describe_tflite(model, tables, path):
    from ..tflite import schema
    sub = tables["subgraphs"][0]
    lines = [f"TFLite model {path}: schema version {tables['version']}, {len(tables['subgraphs'])} subgraph(s)"
             + (f", {tables['description']!r}" if tables["description"] else "")]
    for kind, specs in (("input", model.inputs), ("output", [{"name": n} for n in model.outputs])):
        for spec in specs:
            lines.append(f"{kind}: {spec['name']}" + (f" {spec['dtype']} {spec['shape']}" if "shape" in spec else ""))
    counts = {}
    for op in sub["operators"]:
        code = tables["opcodes"][op["opcode_index"]]
        name = code["custom_code"] if code["code"] == schema.CUSTOM else schema.operator_name(code["code"])
        counts[name] = counts.get(name, 0) + 1
    lines.append(f"operators: {len(sub['operators'])} (" + ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) + ")")
    by_type, sparse = {}, 0
    for tensor in sub["tensors"]:
        b = tensor["buffer"]
        if 0 < b < len(tables["buffers"]) and tables["buffers"][b].size:
            name = schema.TENSOR_TYPE_NAMES[tensor["type"]].lower() if tensor["type"] < len(
                schema.TENSOR_TYPE_NAMES) else str(tensor["type"])
            by_type[name] = by_type.get(name, 0) + int(tables["buffers"][b].size)
            sparse += tensor["sparsity"] is not None
    total = sum(by_type.values())
    lines.append(f"constants: {total:,} bytes" + (" (" + ", ".join(f"{d} {n:,}" for d, n in sorted(by_type.items()))
                                                   + ")" if total else "")
                 + (f", {sparse} stored sparse" if sparse else ""))
    lines.append(str(model.graph))
    return "\n".join(lines)
