"""Read-only accessors for the tables of a TFLite model file (a flatbuffer), over `flatbuffers.table.Table`.

TFLite's schema (`schema.fbs`, file identifier "TFL3", schema version 3 with its backward-compatible
revisions 3a-3c: the extended `builtin_code`, buffers stored outside the flatbuffer by offset and size) names
for each table its fields in order; a field's slot is its position, and flatbuffers stores a table as a
vtable of 2-byte offsets, one per slot (0: absent, the schema's default applies). A union field takes two
slots: its type (a ubyte, the member's position in the union, 0 = none) and its table.

Written from TFLite's schema.fbs (tensorflow/compiler/mlir/lite/schema/schema.fbs, Apache-2.0, the schema
version 3 that LiteRT 2.x reads); tests/test_tflite_schema.py checks every slot, union position and enum name
used here against the code flatc generated from that file, which LiteRT's wheel ships
(`ai_edge_litert.schema_py_generated`).

Only the tables and fields the importer reads are spelled here: Model, SubGraph, Tensor, Buffer, Operator,
OperatorCode, QuantizationParameters, SparsityParameters / DimensionMetadata and the builtin options of the
implemented operators (`OPTIONS`). Everything is read into plain Python values by `read_model`, so a
truncated or foreign file fails there, once, with one error. The writer (`writer.py`) builds the same tables
from `FIELDS` (each table's fields in slot order, with their flatbuffers kind), `OPTIONS` and the enums here.
"""
from __future__ import annotations

import struct

import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

# TensorType -> NumPy dtype (None: a type minicompress does not read).
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
                9: np.int8, 10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16}
TENSOR_TYPE_NAMES = ("FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16", "COMPLEX64",
                     "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT", "UINT32", "UINT16", "INT4",
                     "BFLOAT16")

PADDING = ("SAME", "VALID")
ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

# BuiltinOperator: code -> name (the enum of schema.fbs up to the ops read here and their neighbours; a
# code past this list is named by its number).
BUILTIN_OPERATORS = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
    "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP", "L2_NORMALIZATION", "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MUL", "RELU",
    "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH",
    "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL", "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB",
    "DIV", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP",
    "TOPK_V2", "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM",
    "ARG_MAX", "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL", "SELECT", "SLICE",
    "SIN", "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL", "NOT_EQUAL", "LOG", "SUM", "SQRT",
    "RSQRT", "SHAPE", "POW", "ARG_MIN", "FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR",
    "ONE_HOT", "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE",
    "ZEROS_LIKE", "FILL", "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE",
    "MIRROR_PAD", "ABS", "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N", "GATHER_ND", "COS", "WHERE", "RANK",
    "ELU", "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF", "WHILE",
    "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM",
    "BATCH_MATMUL", "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D",
    "IMAG", "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE",
    "REDUCE_ALL", "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL", "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1", "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2",
    "UNSORTED_SEGMENT_MIN", "SIGN", "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT")
CUSTOM = 32
PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def operator_name(code):
    return BUILTIN_OPERATORS[code] if 0 <= code < len(BUILTIN_OPERATORS) else f"BuiltinOperator {code}"


# BuiltinOptions union: member position -> (table name, [(field, kind, default), ...] in slot order).
# kinds: "i8" byte/enum, "bool", "i32", "f32", "[i32]" a vector of int.
_ACT = ("fused_activation_function", "i8", 0)
OPTIONS = {
    1: ("Conv2DOptions", [("padding", "i8", 0), ("stride_w", "i32", 0), ("stride_h", "i32", 0), _ACT,
                          ("dilation_w_factor", "i32", 1), ("dilation_h_factor", "i32", 1),
                          ("quantized_bias_type", "i8", 0)]),
    2: ("DepthwiseConv2DOptions", [("padding", "i8", 0), ("stride_w", "i32", 0), ("stride_h", "i32", 0),
                                   ("depth_multiplier", "i32", 0), _ACT, ("dilation_w_factor", "i32", 1),
                                   ("dilation_h_factor", "i32", 1)]),
    5: ("Pool2DOptions", [("padding", "i8", 0), ("stride_w", "i32", 0), ("stride_h", "i32", 0),
                          ("filter_width", "i32", 0), ("filter_height", "i32", 0), _ACT]),
    8: ("FullyConnectedOptions", [_ACT, ("weights_format", "i8", 0), ("keep_num_dims", "bool", False),
                                  ("asymmetric_quantize_inputs", "bool", False), ("quantized_bias_type", "i8", 0)]),
    9: ("SoftmaxOptions", [("beta", "f32", 0.0)]),
    10: ("ConcatenationOptions", [("axis", "i32", 0), _ACT]),
    11: ("AddOptions", [_ACT, ("pot_scale_int16", "bool", True)]),
    15: ("ResizeBilinearOptions", [("new_height", "i32", 0), ("new_width", "i32", 0),
                                   ("align_corners", "bool", False), ("half_pixel_centers", "bool", False)]),
    17: ("ReshapeOptions", [("new_shape", "[i32]", None)]),
    21: ("MulOptions", [_ACT]),
    22: ("PadOptions", []),
    26: ("TransposeOptions", []),
    27: ("ReducerOptions", [("keep_dims", "bool", False)]),
    28: ("SubOptions", [_ACT, ("pot_scale_int16", "bool", True)]),
    29: ("DivOptions", [_ACT]),
    32: ("StridedSliceOptions", [("begin_mask", "i32", 0), ("end_mask", "i32", 0), ("ellipsis_mask", "i32", 0),
                                 ("new_axis_mask", "i32", 0), ("shrink_axis_mask", "i32", 0),
                                 ("offset", "bool", False)]),
    35: ("SplitOptions", [("num_splits", "i32", 0)]),
    38: ("DequantizeOptions", []),
    43: ("PadV2Options", []),
    49: ("TransposeConvOptions", [("padding", "i8", 0), ("stride_w", "i32", 0), ("stride_h", "i32", 0), _ACT,
                                  ("quantized_bias_type", "i8", 0)]),
    74: ("ResizeNearestNeighborOptions", [("align_corners", "bool", False), ("half_pixel_centers", "bool", False)]),
    75: ("LeakyReluOptions", [("alpha", "f32", 0.0)]),
    79: ("SplitVOptions", [("num_splits", "i32", 0)]),
    89: ("QuantizeOptions", []),
    91: ("HardSwishOptions", []),
    94: ("DepthToSpaceOptions", [("block_size", "i32", 0)]),
    99: ("DensifyOptions", []),
}
# The tables the writer builds: (field, kind) in slot order. Kinds: "i8" / "u8" / "bool" / "i32" / "u32" /
# "u64" scalars, "string", "table" (a table or a union's table), "[table]" a vector of tables, "[i32]" /
# "[f32]" / "[i64]" / "[u8]" vectors of scalars.
FIELDS = {
    "Model": (("version", "u32"), ("operator_codes", "[table]"), ("subgraphs", "[table]"), ("description", "string"),
              ("buffers", "[table]")),
    "SubGraph": (("tensors", "[table]"), ("inputs", "[i32]"), ("outputs", "[i32]"), ("operators", "[table]"),
                 ("name", "string")),
    "Tensor": (("shape", "[i32]"), ("type", "i8"), ("buffer", "u32"), ("name", "string"), ("quantization", "table")),
    "Buffer": (("data", "[u8]"),),
    "OperatorCode": (("deprecated_builtin_code", "i8"), ("custom_code", "string"), ("version", "i32"),
                     ("builtin_code", "i32")),
    "Operator": (("opcode_index", "u32"), ("inputs", "[i32]"), ("outputs", "[i32]"), ("builtin_options_type", "u8"),
                 ("builtin_options", "table")),
    "QuantizationParameters": (("min", "[f32]"), ("max", "[f32]"), ("scale", "[f32]"), ("zero_point", "[i64]"),
                               ("details_type", "u8"), ("details", "table"), ("quantized_dimension", "i32")),
}
OPTIONS_MEMBER = {name: member for member, (name, _) in OPTIONS.items()}      # options table -> union position
TENSOR_TYPE_CODES = {np.dtype(dtype): code for code, dtype in TENSOR_TYPES.items()}


def operator_code(name):
    """The BuiltinOperator code of `name` ("CONV_2D" -> 3)."""
    return BUILTIN_OPERATORS.index(name)


_FLAGS = {"i8": N.Int8Flags, "bool": N.BoolFlags, "i32": N.Int32Flags, "u32": N.Uint32Flags, "u64": N.Uint64Flags,
          "f32": N.Float32Flags}


class FormatError(ValueError):
    """The bytes are not a TFLite model this reader understands (truncated, foreign or inconsistent)."""


class _Table:
    """One flatbuffer table: its fields read by slot number."""

    def __init__(self, buf, pos):
        self._t = Table(buf, pos)

    def _offset(self, slot):
        return self._t.Offset(4 + 2 * slot)

    def scalar(self, slot, kind, default):
        o = self._offset(slot)
        return self._t.Get(_FLAGS[kind], self._t.Pos + o) if o else default

    def string(self, slot):
        o = self._offset(slot)
        return self._t.String(self._t.Pos + o).decode("utf-8") if o else ""

    def array(self, slot, dtype):
        """A vector of scalars as a NumPy array (a view into the file's bytes; empty when absent)."""
        o = self._offset(slot)
        if not o:
            return None
        start, n = self._t.Vector(o), self._t.VectorLen(o)
        return np.frombuffer(self._t.Bytes, dtype=np.dtype(dtype).newbyteorder("<"), count=n, offset=start)

    def tables(self, slot):
        """A vector of tables: their positions."""
        o = self._offset(slot)
        if not o:
            return []
        start, n = self._t.Vector(o), self._t.VectorLen(o)
        return [self._t.Indirect(start + 4 * i) for i in range(n)]

    def table(self, slot):
        """A table (or a union's table) field: its position, or None."""
        o = self._offset(slot)
        return self._t.Indirect(self._t.Pos + o) if o else None


def _ints(array):
    return [] if array is None else [int(v) for v in array]


def read_options(buf, kind, pos):
    """{field: value} of a BuiltinOptions member (None when the union member is not one read here)."""
    if kind == 0:
        return {}
    if kind not in OPTIONS:
        return None
    _, fields = OPTIONS[kind]
    table = _Table(buf, pos) if pos is not None else None
    out = {}
    for slot, (name, k, default) in enumerate(fields):
        if table is None:
            out[name] = default
        elif k == "[i32]":
            arr = table.array(slot, np.int32)
            out[name] = default if arr is None else _ints(arr)
        else:
            value = table.scalar(slot, k, default)
            out[name] = bool(value) if k == "bool" else value
    return out


def _index_vector(buf, kind, pos):
    """A SparseIndexVector union member (Int32Vector, Uint16Vector, Uint8Vector) as int64 values."""
    dtype = {1: np.int32, 2: np.uint16, 3: np.uint8}.get(kind)
    if dtype is None or pos is None:
        return None
    values = _Table(buf, pos).array(0, dtype)
    return np.zeros(0, np.int64) if values is None else values.astype(np.int64)


def _sparsity(buf, pos):
    t = _Table(buf, pos)
    dims = []
    for p in t.tables(2):
        d = _Table(buf, p)
        dims.append({"format": d.scalar(0, "i8", 0), "dense_size": d.scalar(1, "i32", 0),
                     "array_segments": _index_vector(buf, d.scalar(2, "i8", 0), d.table(3)),
                     "array_indices": _index_vector(buf, d.scalar(4, "i8", 0), d.table(5))})
    return {"traversal_order": _ints(t.array(0, np.int32)), "block_map": _ints(t.array(1, np.int32)),
            "dim_metadata": dims}


def _quantization(buf, pos):
    if pos is None:
        return None
    t = _Table(buf, pos)
    scale, zero_point = t.array(2, np.float32), t.array(3, np.int64)
    if scale is None or not scale.size:
        return None
    return {"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point if zero_point is not None
                                                                           else np.zeros(scale.size), np.int64),
            "quantized_dimension": t.scalar(6, "i32", 0), "has_details": t.scalar(4, "i8", 0) != 0}


def _tensor(buf, pos):
    t = _Table(buf, pos)
    sparsity = t.table(6)
    return {"shape": _ints(t.array(0, np.int32)), "type": t.scalar(1, "i8", 0), "buffer": t.scalar(2, "u32", 0),
            "name": t.string(3), "quantization": _quantization(buf, t.table(4)),
            "is_variable": bool(t.scalar(5, "bool", False)),
            "sparsity": None if sparsity is None else _sparsity(buf, sparsity),
            "shape_signature": _ints(t.array(7, np.int32)) or None}


def _operator(buf, pos):
    t = _Table(buf, pos)
    kind = t.scalar(3, "i8", 0) & 0xFF
    return {"opcode_index": t.scalar(0, "u32", 0), "inputs": _ints(t.array(1, np.int32)),
            "outputs": _ints(t.array(2, np.int32)), "options_type": kind,
            "options": read_options(buf, kind, t.table(4)),
            "has_custom_options": t.array(5, np.uint8) is not None}


def _opcode(buf, pos):
    t = _Table(buf, pos)
    deprecated, extended = t.scalar(0, "i8", 0), t.scalar(3, "i32", 0)
    # Files before revision 3a set only the byte-wide code; later ones set both, the wider one wins past 127.
    code = max(deprecated, extended)
    return {"code": code, "custom_code": t.string(1), "version": t.scalar(2, "i32", 1)}


def _buffer(buf, pos):
    t = _Table(buf, pos)
    data = t.array(0, np.uint8)
    offset, size = t.scalar(1, "u64", 0), t.scalar(2, "u64", 0)
    if (data is None or not data.size) and offset > 1:
        if offset + size > len(buf):
            raise FormatError(f"a buffer stored at offset {offset} (size {size}) lies past the end of the file")
        data = np.frombuffer(buf, np.uint8, size, offset)
    return data if data is not None else np.zeros(0, np.uint8)


def read_model(buf):
    """The model's tables as plain values: {"version", "description", "opcodes", "buffers", "subgraphs"}.

    Raises FormatError for bytes without the "TFL3" identifier, and for offsets that lead outside the
    bytes (a truncated file)."""
    buf = bytes(buf)
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise FormatError(f"it does not carry TFLite's file identifier {FILE_IDENTIFIER.decode()!r} at bytes 4-8 "
                          f"(found {buf[4:8]!r}, {len(buf)} bytes in all)")
    try:
        root = struct.unpack_from("<I", buf, 0)[0]
        model = _Table(buf, root)
        subgraphs = []
        for p in model.tables(2):
            g = _Table(buf, p)
            subgraphs.append({"tensors": [_tensor(buf, q) for q in g.tables(0)], "inputs": _ints(g.array(1, np.int32)),
                              "outputs": _ints(g.array(2, np.int32)),
                              "operators": [_operator(buf, q) for q in g.tables(3)], "name": g.string(4)})
        return {"version": model.scalar(0, "i32", 0), "description": model.string(3),
                "opcodes": [_opcode(buf, p) for p in model.tables(1)],
                "buffers": [_buffer(buf, p) for p in model.tables(4)], "subgraphs": subgraphs}
    except FormatError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise FormatError(f"its tables point outside its {len(buf)} bytes (truncated or corrupt): {exc}") from None
