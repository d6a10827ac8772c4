"""A TFLite model file built table by table: `ModelWriter` collects tensors, constant buffers and operators,
and `to_bytes` lays them out as a flatbuffer with the `flatbuffers` runtime's `Builder`.

The tables and their slots are schema.py's (`FIELDS`, `OPTIONS`, the enums), the one place that knows
TFLite's schema.fbs; here they are only written. A flatbuffer is built back to front: every string, vector
and child table is finished before the table that points to it starts. Constant data is aligned to 16
bytes, as TFLite's converter aligns it (`force_align: 16` on Buffer.data), so LiteRT can read weights in
place. Buffer 0 is the empty buffer that every computed tensor names, as the schema asks.

    w = ModelWriter()
    x = w.tensor("x", [1, 8], np.float32)
    y = w.tensor("y", [1, 4], np.float32)
    w.operator("FULLY_CONNECTED", [x, w.constant("w", weights), w.constant("b", bias)], [y],
               "FullyConnectedOptions", fused_activation_function=1)
    data = w.to_bytes([x], [y])
"""
from __future__ import annotations

import flatbuffers
import numpy as np

from . import schema

_SCALAR_SLOTS = {"i8": "PrependInt8Slot", "u8": "PrependUint8Slot", "bool": "PrependBoolSlot",
                 "i32": "PrependInt32Slot", "u32": "PrependUint32Slot", "u64": "PrependUint64Slot",
                 "f32": "PrependFloat32Slot"}
_VECTOR_DTYPES = {"[i32]": np.int32, "[f32]": np.float32, "[i64]": np.int64, "[u8]": np.uint8}


class ModelWriter:
    """The tensors, buffers and operators of one subgraph, kept as plain values until `to_bytes`."""

    def __init__(self):
        self.tensors, self.buffers, self.operators, self.codes = [], [None], [], {}

    def tensor(self, name, shape, dtype, quantization=None, data=None):
        """Append a tensor; returns its index. quantization: {"scale", "zero_point", "quantized_dimension"}
        (per tensor: one scale; per channel: one per slice along quantized_dimension)."""
        dtype = np.dtype(dtype)
        if dtype not in schema.TENSOR_TYPE_CODES:
            raise TypeError(f"tensor {name!r}: dtype {dtype} has no TFLite TensorType here")
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data, dtype.newbyteorder("<")).reshape(-1).view(np.uint8))
            buffer = len(self.buffers) - 1
        self.tensors.append({"name": name, "shape": [int(d) for d in shape], "type": schema.TENSOR_TYPE_CODES[dtype],
                             "buffer": buffer, "quantization": quantization})
        return len(self.tensors) - 1

    def constant(self, name, array, quantization=None):
        array = np.asarray(array)
        return self.tensor(name, array.shape, array.dtype, quantization, array)

    def operator(self, name, inputs, outputs, options=None, **fields):
        """Append the builtin operator `name` (BuiltinOperator) reading and writing tensor indices (-1: an
        omitted optional input), with its `options` table (a name of schema.OPTIONS) and fields; returns the
        operator's dict, whose "options" a later pass may still change (a fused activation)."""
        code = schema.operator_code(name)
        self.codes.setdefault(code, len(self.codes))
        if options is not None:
            known = {field for field, _, _ in schema.OPTIONS[schema.OPTIONS_MEMBER[options]][1]}
            unknown = set(fields) - known
            if unknown:
                raise ValueError(f"{options} has no field(s) {sorted(unknown)}")
        op = {"name": name, "code": code, "inputs": [int(i) for i in inputs], "outputs": [int(i) for i in outputs],
              "options_table": options, "options": dict(fields)}
        self.operators.append(op)
        return op

    # ----- serialization -----------------------------------------------------------------------
    def to_bytes(self, inputs, outputs, name="main", description="minicompress"):
        """The model file: one subgraph, schema version 3, file identifier "TFL3"."""
        b = flatbuffers.Builder(1024 + sum(0 if d is None else d.size for d in self.buffers))
        buffers = [_table(b, "Buffer", {} if d is None or not d.size else {"data": _data_vector(b, d)})
                   for d in self.buffers]
        tensors = [self._tensor(b, t) for t in self.tensors]
        operators = [self._operator(b, op) for op in self.operators]
        order = sorted(self.codes, key=self.codes.get)
        codes = [_table(b, "OperatorCode", {"deprecated_builtin_code": min(code, schema.PLACEHOLDER_FOR_GREATER_OP_CODES),
                                            "version": 1, "builtin_code": code}) for code in order]
        subgraph = _table(b, "SubGraph", {"tensors": _tables(b, tensors), "inputs": _vector(b, inputs, "[i32]"),
                                          "outputs": _vector(b, outputs, "[i32]"),
                                          "operators": _tables(b, operators), "name": b.CreateString(name)})
        model = _table(b, "Model", {"version": schema.SCHEMA_VERSION, "operator_codes": _tables(b, codes),
                                    "subgraphs": _tables(b, [subgraph]), "description": b.CreateString(description),
                                    "buffers": _tables(b, buffers)})
        b.Finish(model, file_identifier=schema.FILE_IDENTIFIER)
        return bytes(b.Output())

    def _tensor(self, b, t):
        fields = {"shape": _vector(b, t["shape"], "[i32]"), "type": t["type"], "buffer": t["buffer"],
                  "name": b.CreateString(t["name"])}
        q = t["quantization"]
        if q is not None:
            fields["quantization"] = _table(b, "QuantizationParameters", {
                "scale": _vector(b, np.reshape(q["scale"], -1), "[f32]"),
                "zero_point": _vector(b, np.reshape(q["zero_point"], -1), "[i64]"),
                "quantized_dimension": int(q.get("quantized_dimension", 0))})
        return _table(b, "Tensor", fields)

    def _operator(self, b, op):
        fields = {"opcode_index": self.codes[op["code"]], "inputs": _vector(b, op["inputs"], "[i32]"),
                  "outputs": _vector(b, op["outputs"], "[i32]")}
        if op["options_table"] is not None:
            member = schema.OPTIONS_MEMBER[op["options_table"]]
            fields["builtin_options_type"] = member
            fields["builtin_options"] = _options(b, schema.OPTIONS[member][1], op["options"])
        return _table(b, "Operator", fields)


def _vector(b, values, kind):
    return b.CreateNumpyVector(np.asarray(values, _VECTOR_DTYPES[kind]).reshape(-1))


def _data_vector(b, data):
    """A [ubyte] vector whose first byte sits at a multiple of 16 from the end of the buffer (and, once the
    builder pads the whole file to its largest alignment, from its start)."""
    b.StartVector(1, data.size, 16)
    b.head = b.head - data.size
    b.Bytes[b.head:b.head + data.size] = data.tobytes()
    b.vectorNumElems = data.size
    return b.EndVector()


def _tables(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _table(b, name, values):
    """Table `name` of schema.FIELDS with `values` (scalars, or offsets of what is already built)."""
    fields = schema.FIELDS[name]
    b.StartObject(len(fields))
    for slot, (field, kind) in enumerate(fields):
        if field not in values:
            continue
        if kind in _SCALAR_SLOTS:
            getattr(b, _SCALAR_SLOTS[kind])(slot, values[field], 0)
        else:
            b.PrependUOffsetTRelativeSlot(slot, values[field], 0)
    return b.EndObject()


def _options(b, fields, values):
    """A builtin options table: its fields in slot order (schema.OPTIONS); a value equal to the schema's
    default is left out, as flatbuffers does."""
    vectors = {name: _vector(b, values[name], "[i32]") for name, kind, _ in fields
               if kind == "[i32]" and values.get(name) is not None}
    b.StartObject(len(fields))
    for slot, (name, kind, default) in enumerate(fields):
        if name in vectors:
            b.PrependUOffsetTRelativeSlot(slot, vectors[name], 0)
        elif name in values and kind != "[i32]":
            value = values[name]
            getattr(b, _SCALAR_SLOTS[kind])(slot, bool(value) if kind == "bool" else value,
                                            bool(default) if kind == "bool" else default)
    return b.EndObject()
