"""Fuzzing `io.load`: byte mutations of valid files and edits of their JSON header (wrong types, huge
numbers and shapes, deep nesting, missing keys). Whatever the file, `load` returns a model or raises
`ModelFileError`; any other exception is a bug. CI runs a bounded number of examples
(MINICOMPRESS_FUZZ_EXAMPLES raises it for a longer local run)."""
import io as bytes_io
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import io, nn
from minicompress import prune as P

EXAMPLES = int(os.environ.get("MINICOMPRESS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _models():
    mc.manual_seed(0)
    masked = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))
    P.l1_unstructured(masked[4], "weight", amount=0.5)
    from minicompress import quant as Q
    int4 = Q.Int4Linear.from_float(nn.Linear(40, 3), 16, symmetric=False)    # packed nibbles, zero points
    return {"masked": masked, "dynamic": Q.quantize_dynamic(nn.Sequential(nn.Linear(3, 2))), "lstm": nn.LSTM(2, 2),
            "int4": int4}


class _Files(dict):
    def __repr__(self):  # hypothesis prints the arguments of a failing example: not kilobytes of bytes
        return f"<valid model files: {', '.join(self)}>"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    out = _Files()
    for name, model in _models().items():
        io.save(model, folder / f"{name}.npz")
        out[name] = (folder / f"{name}.npz").read_bytes()
    return out


def _members(data):
    with zipfile.ZipFile(bytes_io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def _pack(members):
    buffer = bytes_io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _load_must_not_crash(tmp_path, data):
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(data)
    try:
        model = io.load(path)
    except io.ModelFileError:
        return
    assert isinstance(model, nn.Module)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
    | st.sampled_from(["a0", "a1", "minicompress.nn.layers.Linear", "__tensor__", "__array__", "__object__"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["__tensor__", "__array__", "__tuple__", "__dict__", "__object__", "__constant__", "__scalar__",
                         "__qconfig__", "__factory__", "class", "state", "kwargs", "array", "x"]), inner, max_size=3),
    max_leaves=8)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_byte_mutations_give_a_model_or_model_file_error(files, tmp_path, data):
    raw = bytearray(files[data.draw(st.sampled_from(sorted(files)))])
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "insert"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            del raw[at:]
            if not raw:
                break
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    _load_must_not_crash(tmp_path, bytes(raw))


@FUZZ
@given(data=st.data())
def test_header_edits_give_a_model_or_model_file_error(files, tmp_path, data):
    members = _members(files[data.draw(st.sampled_from(sorted(files)))])
    header = json.loads(np.load(bytes_io.BytesIO(members["__format__.json.npy"])).tobytes())
    deep = []
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(header) if p]
        path = data.draw(st.sampled_from(paths))
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "deep", "huge"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "deep":  # spliced into the text below: json.dumps itself would recurse too deeply
            deep.append(data.draw(st.integers(50, 3000)))
            parent[path[-1]] = f"@deep{len(deep) - 1}@"
        elif action == "huge":
            parent[path[-1]] = data.draw(st.sampled_from([2**63, -2**63, 2**40, 10**30, 1e308, -1]))
        else:
            parent[path[-1]] = data.draw(json_values)
    buffer = bytes_io.BytesIO()
    text = json.dumps(header)
    for k, depth in enumerate(deep):
        text = text.replace(f'"@deep{k}@"', "[" * depth + "]" * depth)
    np.save(buffer, np.frombuffer(text.encode(), dtype=np.uint8))
    members["__format__.json.npy"] = buffer.getvalue()
    if data.draw(st.booleans()):  # and an array whose .npy header claims another shape
        name = data.draw(st.sampled_from(sorted(k for k in members if k != "__format__.json.npy")))
        shape = data.draw(st.sampled_from(["(1099511627776,)", "(0,)", "()", "(-1,)", "(3, 3, 3, 3)", "(2**70,)"]))
        array_header = members[name][:128].split(b"'shape': ")
        if len(array_header) == 2:
            rest = array_header[1].split(b"), ", 1)
            members[name] = (array_header[0] + b"'shape': " + shape.encode() + b", " +
                             (rest[1] if len(rest) == 2 else b"}").ljust(0) + members[name][128:])
    _load_must_not_crash(tmp_path, _pack(members))
