"""Read and write safetensors files: the weights of a Hugging Face checkpoint, without pickle.

The format (https://github.com/huggingface/safetensors, "Format"):

    bytes 0..8          N, the header's length: an unsigned 64-bit little-endian integer
    bytes 8..8+N        the header: UTF-8 JSON, {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
                        ..., "__metadata__": {str: str}} (the metadata entry is optional)
    bytes 8+N..         the data buffer; tensor `name` is buffer[begin:end], C order, little-endian

Why the reader is written here rather than taken from the `safetensors` package: minicompress needs only
numpy, numba and tqdm at run time, and a reader is forty lines of numpy; it is also a place to read what
a checkpoint file is. It checks more than it trusts: the header length against the file size, every dtype
against the ones it knows, every byte count against dtype size x shape, every range against the buffer,
and that the ranges tile the buffer without holes or overlaps (as the format requires). A truncated or
inconsistent file raises `SafetensorsError` naming the file and what is wrong, before any array is built.

    >>> tensors = load_file("model.safetensors")          # {name: np.ndarray}, in header order
    >>> tensors["embeddings.word_embeddings.weight"].shape
    (30522, 384)
"""
import json
import os
import struct

import numpy as np

__all__ = ["SafetensorsError", "DTYPES", "read_header", "load_file", "save_file"]

# the format's dtype names -> little-endian numpy dtypes (BF16 and the float8 types have no numpy dtype)
DTYPES = {
    "BOOL": np.dtype("bool"), "U8": np.dtype("u1"), "I8": np.dtype("i1"), "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"), "F16": np.dtype("<f2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"), "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit: refuse a header larger than 100 MB


class SafetensorsError(ValueError):
    """A file that is not a valid safetensors file (truncated, inconsistent or of an unknown dtype)."""


def _fail(path, message):
    raise SafetensorsError(f"{path}: {message}")


def read_header(path):
    """(header dict without "__metadata__", metadata dict, offset of the data buffer, buffer length),
    every entry checked as the module docstring says."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors file not found: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            _fail(path, f"truncated: {size} bytes, fewer than the 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            _fail(path, f"header length {n} does not fit in the file ({size} bytes): truncated or not safetensors")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        _fail(path, f"header is not UTF-8 JSON ({err})")
    if not isinstance(header, dict):
        _fail(path, f"header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    buffer_len = size - 8 - n
    ranges = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            _fail(path, f"tensor {name!r}: entry must hold exactly dtype, shape and data_offsets, got {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            _fail(path, f"tensor {name!r}: dtype {dtype!r} is not supported; expected one of {sorted(DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            _fail(path, f"tensor {name!r}: shape must be a list of non-negative ints, got {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            _fail(path, f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r}")
        expected = DTYPES[dtype].itemsize * int(np.prod(shape, dtype=np.int64))
        if offsets[1] - offsets[0] != expected:
            _fail(path, f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for dtype {dtype} and shape {shape}, "
                        f"which need {expected}")
        if offsets[1] > buffer_len:
            _fail(path, f"tensor {name!r}: data ends at byte {offsets[1]} of a {buffer_len}-byte buffer (truncated)")
        ranges.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            _fail(path, f"tensor {name!r} starts at byte {begin}, expected {end}: the tensors must tile the "
                        f"data buffer without holes or overlaps")
        end = stop
    if end != buffer_len:
        _fail(path, f"the tensors cover {end} bytes of a {buffer_len}-byte data buffer")
    return header, metadata, 8 + n, buffer_len


def load_file(path):
    """{name: np.ndarray} for every tensor in a safetensors file, in header order (each array its own copy,
    native byte order, writable)."""
    header, _, start, buffer_len = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        buffer = f.read(buffer_len)
    if len(buffer) != buffer_len:
        _fail(path, f"read {len(buffer)} of {buffer_len} data bytes (the file changed while reading)")
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        array = np.frombuffer(buffer, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin)
        out[name] = array.reshape(info["shape"]).astype(dtype.newbyteorder("="), copy=True)
    return out


def save_file(tensors, path, metadata=None):
    """Write {name: array} as a safetensors file (arrays in the given order, header padded with spaces to a
    multiple of 8 bytes, as the reference writer does). Used by the tests to build small and broken files."""
    codes = {dt: code for code, dt in DTYPES.items()}
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, value in tensors.items():
        array = np.ascontiguousarray(value)
        le = array.dtype.newbyteorder("<") if array.dtype.byteorder not in "|" else array.dtype
        if le not in codes:
            raise TypeError(f"tensors[{name!r}]: dtype {array.dtype} has no safetensors code")
        data = array.astype(le, copy=False).tobytes()
        header[name] = {"dtype": codes[le], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for chunk in chunks:
            f.write(chunk)
