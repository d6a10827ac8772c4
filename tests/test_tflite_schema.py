"""minicompress's hand-written TFLite accessors (tflite/schema.py) against the code flatc generated from
TFLite's schema.fbs (shipped in LiteRT's wheel as `ai_edge_litert.schema_py_generated`): every field read
sits in the slot the generated accessor reads, every options table has its union position, every operator
code its name. Then bytes that are not a whole model: refused with TFLiteFormatError, never another error."""
import pathlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tflite_writer import Writer, fb

from minicompress import tflite
from minicompress.graph.registry import UnsupportedOperatorError
from minicompress.tflite import schema

# table -> the fields schema.py reads, in the slot order it assumes
TABLES = {
    "Model": ["Version", "OperatorCodes", "Subgraphs", "Description", "Buffers"],
    "SubGraph": ["Tensors", "Inputs", "Outputs", "Operators", "Name"],
    "Tensor": ["Shape", "Type", "Buffer", "Name", "Quantization", "IsVariable", "Sparsity", "ShapeSignature"],
    "Buffer": ["Data", "Offset", "Size"],
    "OperatorCode": ["DeprecatedBuiltinCode", "CustomCode", "Version", "BuiltinCode"],
    "Operator": ["OpcodeIndex", "Inputs", "Outputs", "BuiltinOptionsType", "BuiltinOptions", "CustomOptions"],
    "QuantizationParameters": ["Min", "Max", "Scale", "ZeroPoint", "DetailsType", "Details", "QuantizedDimension"],
    "SparsityParameters": ["TraversalOrder", "BlockMap", "DimMetadata"],
    "DimensionMetadata": ["Format", "DenseSize", "ArraySegmentsType", "ArraySegments", "ArrayIndicesType",
                          "ArrayIndices"],
}
DEPRECATED = {("ResizeBilinearOptions", "new_height"), ("ResizeBilinearOptions", "new_width")}


GENERATED = pathlib.Path(fb.__file__).read_text()


def _vtable_offsets(name):
    """{accessor name: vtable offset} read from flatc's generated class `name`."""
    start = GENERATED.index(f"\nclass {name}(object):")
    end = GENERATED.find("\nclass ", start + 1)
    source = GENERATED[start:end]
    return {method: int(offset) for method, offset in
            re.findall(r"def (\w+)\(self[^)]*\):\n[^\n]*?Offset\((\d+)\)", source)}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_table_slots_match_the_generated_code(table):
    offsets = _vtable_offsets(table)
    for slot, field in enumerate(TABLES[table]):
        assert offsets[field] == 4 + 2 * slot, (table, field)


@pytest.mark.parametrize("position", sorted(schema.OPTIONS))
def test_options_tables_match_the_generated_code(position):
    name, fields = schema.OPTIONS[position]
    assert getattr(fb.BuiltinOptions, name) == position
    offsets = {k.lower(): v for k, v in _vtable_offsets(name).items()}
    for slot, (field, _, _) in enumerate(fields):
        if (name, field) in DEPRECATED:
            continue                     # flatc writes no accessor for a deprecated field
        assert offsets[field.replace("_", "")] == 4 + 2 * slot, (name, field)


@pytest.mark.parametrize("table", sorted(schema.FIELDS))
def test_writer_fields_match_the_generated_code(table):
    """The fields tflite/writer.py writes (schema.FIELDS) sit in the slots flatc's code reads."""
    offsets = {k.lower(): v for k, v in _vtable_offsets(table).items()}
    for slot, (field, _) in enumerate(schema.FIELDS[table]):
        assert offsets[field.replace("_", "")] == 4 + 2 * slot, (table, field)


def test_operator_names_match_the_generated_enum():
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    assert [names[i] for i in range(len(schema.BUILTIN_OPERATORS))] == list(schema.BUILTIN_OPERATORS)
    types = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    assert [types[i] for i in range(len(schema.TENSOR_TYPE_NAMES))] == list(schema.TENSOR_TYPE_NAMES)


def _small_model():
    m = Writer()
    x, h, y = m.tensor([1, 4, 4, 2], name="x"), m.tensor([1], name="h"), m.tensor([1], name="y")
    m.op("CONV_2D", [x, m.const(np.ones((3, 1, 1, 2), np.float32)), m.const(np.zeros(3, np.float32))], [h],
         "Conv2DOptions", padding=0, strideW=1, strideH=1)
    m.op("MEAN", [h, m.const(np.array([1, 2], np.int32))], [y], "ReducerOptions", keepDims=False)
    return m.finish([x], [y])


SMALL = _small_model()


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(0, len(SMALL) - 1))
def test_every_truncation_is_refused_as_a_format_error(cut):
    with pytest.raises(tflite.TFLiteFormatError, match="not a readable TFLite model"):
        tflite.load(SMALL[:cut])


@settings(max_examples=30, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(8, len(SMALL) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupt_bytes_load_or_are_refused_never_crash(flips):
    data = bytearray(SMALL)
    for position, value in flips:
        data[position] = value
    try:
        tflite.load(bytes(data))
    except (tflite.TFLiteFormatError, UnsupportedOperatorError):
        pass
