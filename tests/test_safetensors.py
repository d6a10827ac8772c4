"""The safetensors reader: the `safetensors` package is the oracle for valid files (both directions);
truncated and inconsistent files raise a clear error."""
import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicompress.safetensors import DTYPES, SafetensorsError, load_file, read_header, save_file

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the safetensors package is the test oracle")

_DTYPES = [np.dtype(d) for d in ("bool", "u1", "i1", "<i2", "<f2", "<i4", "<f4", "<i8", "<f8", "<u8")]
arrays = st.sampled_from(_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
tensor_dicts = st.dictionaries(st.text("abcdefgh.", min_size=1, max_size=6), arrays, min_size=1, max_size=4)


@given(tensor_dicts)
def test_reads_what_the_safetensors_package_writes(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    safetensors_numpy.save_file(tensors, str(path), metadata={"format": "np"})
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)


@given(tensor_dicts)
def test_the_safetensors_package_reads_what_we_write(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    save_file(tensors, path, metadata={"format": "np"})
    loaded = safetensors_numpy.load_file(str(path))
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype


def _write_raw(path, header, data):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_truncated_files_raise_a_clear_error(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, path)
    whole = path.read_bytes()
    for cut, message in ((4, "fewer than the 8-byte"), (20, "header length"), (len(whole) - 4, "truncated")):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(whole[:cut])
        with pytest.raises(SafetensorsError, match=message):
            load_file(broken)


@pytest.mark.parametrize("entry, message", [
    ({"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, "dtype 'BF16' is not supported"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "need 12"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [4, 0]}, "begin <= end"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "non-negative ints"),
    ({"dtype": "F32", "shape": [2]}, "exactly dtype, shape and data_offsets"),
])
def test_inconsistent_entries_raise_a_clear_error(tmp_path, entry, message):
    path = _write_raw(tmp_path / "t.safetensors", {"w": entry}, bytes(8))
    with pytest.raises(SafetensorsError, match=message):
        read_header(path)


def test_holes_and_overlaps_in_the_buffer_are_errors(tmp_path):
    overlap = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    with pytest.raises(SafetensorsError, match="without holes or overlaps"):
        read_header(_write_raw(tmp_path / "o.safetensors", overlap, bytes(12)))
    tail = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    with pytest.raises(SafetensorsError, match="cover 8 bytes of a 12-byte"):
        read_header(_write_raw(tmp_path / "h.safetensors", tail, bytes(12)))
    path = tmp_path / "j.safetensors"
    path.write_bytes(struct.pack("<Q", 3) + b"{no")
    with pytest.raises(SafetensorsError, match="not UTF-8 JSON"):
        read_header(path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_file(tmp_path / "missing.safetensors")


def test_every_dtype_code_is_little_endian():
    assert all(dt.byteorder in "<|=" for dt in DTYPES.values())
