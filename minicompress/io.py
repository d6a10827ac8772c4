"""Model files: `save(model, path, metadata=None)`, `load(path)` and `load_metadata(path)`, with no
pickle and nothing executed.

A model file is an uncompressed NumPy `.npz` archive holding

    __format__.json   {"format": "minicompress", "version": 2, "model": <module tree>, "metadata": {...}}
    a0, a1, ...       the arrays (parameters, buffers, array attributes), referenced by name

The module tree names each module's class (which must be a `Module` subclass defined inside
minicompress: nothing else can be built), its plain attributes (numbers, NumPy scalars, strings,
booleans, lists, dicts, dtype and qscheme constants, quantization configs), its parameters, buffers and
children, its forward pre-hooks when they are minicompress hook objects (pruning masks) and its forward
hooks when they are minicompress hook functions (the observers `prepare` attaches). `metadata` is any
JSON-able dict the caller wants kept with the model (the command line stores the input preprocessing
there); `load_metadata` reads it without building the model. Version 1 files (no NumPy scalars, no
metadata, no hooks) still load.

Loading treats the file as untrusted: it is opened as a zip archive; the header must be at most
`MAX_HEADER_BYTES` and nested at most `MAX_DEPTH` levels; every array's declared shape and dtype must
account exactly for the bytes stored for it (so nothing larger than the file is ever allocated); each
layer's sizes (`in_features`, `out_channels`, `kernel_size`, ...) must match its weights' shapes. The
tree is built bottom-up and only returned when every part was read; anything else raises
`ModelFileError` naming what is wrong.

Writes are atomic: the archive goes to a temporary file in the target's folder, which is renamed over
the target only once it is complete; the temporary file is removed if the save fails or is
interrupted. A new file gets the mode the umask gives; an existing file keeps its mode; saving through
a symbolic link writes the file it points to and keeps the link.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
import os
import re
import secrets
import zipfile

import numpy as np

from .nn.module import Module, Parameter
from .tensor import Tensor

FORMAT_NAME = "minicompress"
FORMAT_VERSION = 2
_HEADER = "__format__.json"
MAX_DEPTH = 100               # JSON nesting levels; a model tree needs about 4 per level of submodules
MAX_HEADER_BYTES = 64 << 20

# Attributes that hold transient state (bound callables, memos) rather than model data; they are not
# saved and a loaded module does not have them. Hooks are saved on their own (see `_Writer.module`).
TRANSIENT_ATTRIBUTES = {"_forward_hooks", "_forward_pre_hooks", "_bias_q_memo", "_packed_weight", "_requant_plan",
                        "_conv_plan", "_checked", "_inference_plan"}

# The modules that define layers, imported before a file is read so that each class can be found by
# name in a fresh process (quant.dynamic, for one, is otherwise only imported on first use).
LAYER_MODULES = ("nn", "quant", "quant.dynamic", "quant.dynamic_per_token", "quant.dynamic_rnn", "quant.observer",
                 "quant.fake_quantize", "quant.embedding", "quant.ort_calibrate", "quant.weight_only", "prune",
                 "prune.sparse_modules", "distill", "models", "graph")


class ModelFileError(ValueError):
    """A model file that cannot be read: truncated, corrupted, tampered, or from a newer version."""


# ----- the registry of buildable classes -------------------------------------------------------

# Classes that moved to another module: a file written before the move names each by its old place.
MOVED_CLASSES = {
    **{f"minicompress.quant.fuse.{name}": f"minicompress.nn.fused.{name}"
       for name in ("_FusedModule", "_FusedConv", "ConvReLU2d", "LinearReLU", "ConvBn2d", "ConvBnReLU2d")},
    "minicompress.quant.stubs.QuantStub": "minicompress.nn.stubs.QuantStub",
    "minicompress.quant.stubs.DeQuantStub": "minicompress.nn.stubs.DeQuantStub",
    "minicompress.quant.qtensor.QTensor": "minicompress.qtensor.QTensor",
}


def _with_moved_names(classes):
    """`classes` (name -> class) plus each moved class under its old name."""
    return {**classes, **{old: classes[new] for old, new in MOVED_CLASSES.items() if new in classes}}


def _all_subclasses(cls):
    stack, seen = [cls], []
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def _load_minicompress_modules():
    for name in LAYER_MODULES:
        importlib.import_module(f"minicompress.{name}")


def _name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _class_name(obj) -> str:
    return _name(type(obj))


def _module_classes():
    _load_minicompress_modules()
    return {_name(c): c for c in [Module] + _all_subclasses(Module) if c.__module__.startswith("minicompress.")}


def _hook_classes():
    """Forward pre-hook classes that can be saved: those defining `to_config` / `from_config`."""
    from . import prune
    return {_name(cls): cls for cls in prune.SERIALIZABLE_HOOKS}


def _forward_hook_functions():
    """Forward hook functions that can be saved, by name: the observer hook of `quant.prepare`."""
    prepare = importlib.import_module("minicompress.quant.prepare")  # the module, not quant.prepare()
    return {f"{f.__module__}.{f.__qualname__}": f for f in prepare.SERIALIZABLE_FORWARD_HOOKS}


def _data_classes():
    """Plain-data value classes stored as their attributes (a quantized tensor: levels, scales, zero
    points, axis, qscheme; a histogram observer's state), rebuilt without calling their constructor."""
    from .prune.sparse import CSRMatrix
    from .quant.histogram import HistogramState
    from .qtensor import QTensor
    return {_name(c): c for c in (QTensor, CSRMatrix, HistogramState)}


def _state(obj):
    """An object's attributes, whether it keeps them in __dict__ or __slots__."""
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    return {name: getattr(obj, name) for name in type(obj).__slots__ if hasattr(obj, name)}


def _constants():
    """dtype and qscheme constants stored by name."""
    from .quant import dtypes
    return {name: value for name, value in vars(dtypes).items()
            if not name.startswith("_") and type(value).__module__ == dtypes.__name__ and not isinstance(value, type)}


# ----- encoding --------------------------------------------------------------------------------

class _Writer:
    def __init__(self):
        from .quant.observer import _PartialWrapper
        from .quant.qconfig import QConfig
        self.arrays = {}
        self.constants = {id(v): k for k, v in _constants().items()}
        self.data_classes = _data_classes()
        self.module_classes = _module_classes()
        self.hook_functions = {id(f): name for name, f in _forward_hook_functions().items()}
        self.QConfig, self.PartialWrapper = QConfig, _PartialWrapper

    def array(self, array):
        key = f"a{len(self.arrays)}"
        array = np.asarray(array)
        self.arrays[key] = np.ascontiguousarray(array).reshape(array.shape)  # ascontiguousarray makes 0-d 1-d
        return key

    def factory(self, factory, where):
        """An observer class or `with_args` factory, as its class name and bound keyword arguments."""
        kwargs = {}
        if isinstance(factory, self.PartialWrapper):
            partial = factory.p
            if partial.args:
                raise TypeError(f"cannot save {where}: {factory!r} binds positional arguments")
            factory, kwargs = partial.func, dict(partial.keywords)
        if not isinstance(factory, type) or _name(factory) not in self.module_classes:
            raise TypeError(f"cannot save {where}: {factory!r} is not a minicompress observer class or factory")
        return {"class": _name(factory), "kwargs": {k: self.value(v, f"{where}.{k}") for k, v in kwargs.items()}}

    def value(self, value, where):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return {"__scalar__": [value.dtype.name, value.item()]}
        if id(value) in self.constants:
            return {"__constant__": self.constants[id(value)]}
        if isinstance(value, Tensor):
            return {"__tensor__": self.array(value.data)}
        if isinstance(value, np.ndarray):
            return {"__array__": self.array(value)}
        if isinstance(value, np.dtype):
            return {"__dtype__": value.name}
        if isinstance(value, self.QConfig):
            return {"__qconfig__": {"activation": self.factory(value.activation, f"{where}.activation"),
                                    "weight": self.factory(value.weight, f"{where}.weight")}}
        if isinstance(value, (self.PartialWrapper, type)):
            return {"__factory__": self.factory(value, where)}
        if isinstance(value, (tuple, list)):
            return {"__tuple__" if isinstance(value, tuple) else "__list__":
                    [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"__dict__": {k: self.value(v, f"{where}.{k}") for k, v in value.items()}}
        if isinstance(value, set):
            return {"__set__": [self.value(v, where) for v in sorted(value, key=str)]}
        if _class_name(value) in self.data_classes:
            return {"__object__": {"class": _class_name(value),
                                   "state": {k: self.value(v, f"{where}.{k}") for k, v in _state(value).items()}}}
        raise TypeError(f"cannot save {where}: a {type(value).__name__} is not model data")

    def module(self, module, where):
        if _class_name(module) not in self.module_classes:
            raise TypeError(f"cannot save {where or 'the model'}: {_class_name(module)} is not a minicompress layer")
        attributes = {}
        for key, value in module.__dict__.items():
            if key in ("_parameters", "_buffers", "_modules", "_non_persistent") or key in TRANSIENT_ATTRIBUTES:
                continue
            attributes[key] = self.value(value, f"{where}.{key}" if where else key)
        pre_hooks = []
        for hook in module._forward_pre_hooks.values():
            if not hasattr(hook, "to_config"):
                raise TypeError(f"cannot save {where or 'the model'}: its forward pre-hook {hook!r} is not model data")
            pre_hooks.append({"class": _class_name(hook), "config": self.value(hook.to_config(), f"{where}.hook")})
        hooks = []
        for hook in module._forward_hooks.values():
            if id(hook) not in self.hook_functions:
                raise TypeError(f"cannot save {where or 'the model'}: its forward hook {hook!r} is not a minicompress "
                                f"hook (remove it before saving)")
            hooks.append(self.hook_functions[id(hook)])
        return {
            "class": _class_name(module),
            "attributes": attributes,
            "parameters": {k: None if p is None else {"array": self.array(p.data), "requires_grad": p.requires_grad}
                           for k, p in module._parameters.items()},
            "buffers": {k: None if b is None else self.array(b.data) for k, b in module._buffers.items()},
            "non_persistent": sorted(module._non_persistent),
            "children": {k: None if m is None else self.module(m, f"{where}.{k}" if where else k)
                         for k, m in module._modules.items()},
            "pre_hooks": pre_hooks,
            "forward_hooks": hooks,
        }


def _check_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON data or None, got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must hold only JSON data (dicts with str keys, lists, str, finite numbers, "
                        f"bool, None): {exc}") from None
    return json.loads(text)


def _target(path):
    """The file to write: `path`, or the file a symbolic link at `path` points to (the link is kept)."""
    path = os.path.abspath(os.fspath(path))
    return os.path.realpath(path) if os.path.islink(path) else path


def save(model: Module, path, *, metadata=None) -> None:
    """Write `model` (and `metadata`, a JSON-able dict kept with it, see `load_metadata`) to `path`.

    Atomic (temporary file in the same folder, then rename); see the module docstring for file modes,
    symbolic links and failures.

    Raises:
        TypeError: `model` is not a minicompress Module, holds something that is not model data (a
            layer defined outside minicompress, an unknown hook), or `metadata` is not JSON data.
        FileNotFoundError: the folder of `path` does not exist.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    metadata = _check_metadata(metadata)
    user_path = os.fspath(path)
    target = _target(user_path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {user_path!r}: folder {folder!r} does not exist")
    if os.path.isdir(target):
        raise IsADirectoryError(f"cannot save to {user_path!r}: it is a folder")
    writer = _Writer()
    tree = writer.module(model, "")
    header = json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": tree, "metadata": metadata})
    mode = os.stat(target).st_mode & 0o7777 if os.path.exists(target) else None
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}.npz")
    try:
        # 0o666 as open() would use: the umask decides a new file's mode.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_HEADER: np.frombuffer(header.encode(), dtype=np.uint8)}, **writer.arrays)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:  # on any exception, KeyboardInterrupt included; after the rename there is nothing left
        if os.path.lexists(tmp):
            os.unlink(tmp)


# ----- decoding --------------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _nesting_depth(text: bytes) -> int:
    """How deeply the JSON `text` nests arrays and objects (strings skipped), without parsing it."""
    codes = np.frombuffer(_STRING.sub(b'""', text), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


class _Archive:
    """The members of a model file, each read only once its size is checked against the file."""

    def __init__(self, path):
        self.path = path
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                start = f.read(6)
            if start.startswith(b"PK\x03\x04"):
                raise ModelFileError(f"{path!r} is truncated or corrupted (its zip directory is missing)")
            what = "a single .npy array" if start == b"\x93NUMPY" else "not a .npz archive"
            raise ModelFileError(f"{path!r} is not a minicompress model file ({what}; model files are written by "
                                 f"minicompress.io.save)")
        self.zip = zipfile.ZipFile(path)
        self.file_size = os.path.getsize(path)
        self.members = {}
        for info in self.zip.infolist():
            if info.filename.endswith(".npy"):
                self.members[info.filename[:-4]] = info

    def close(self):
        self.zip.close()

    def read(self, key, where, max_bytes=None):
        info = self.members.get(key) if isinstance(key, str) else None
        if info is None:
            raise ModelFileError(f"{where}: array {key!r} is missing from the file")
        if info.file_size > self.file_size and info.compress_type == zipfile.ZIP_STORED:
            raise ModelFileError(f"{where}: array {key!r} claims {info.file_size} bytes, more than the whole file")
        if info.compress_size > self.file_size:
            raise ModelFileError(f"{where}: array {key!r} claims {info.compress_size} bytes, more than the whole file")
        if max_bytes is not None and info.file_size > max_bytes:
            raise ModelFileError(f"{where}: {info.file_size} bytes, more than the {max_bytes} allowed")
        with self.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):  # what np.savez writes
                raise ModelFileError(f"{where}: array {key!r} has unsupported .npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            try:
                shape, fortran, dtype = read_header(f)
            except Exception as exc:  # NumPy parses the header text with ast: SyntaxError, TokenError, ...
                raise ModelFileError(f"{where}: array {key!r} has a malformed .npy header "
                                     f"({type(exc).__name__}: {exc})") from None
            if dtype.hasobject:
                raise ModelFileError(f"{where}: array {key!r} holds Python objects, which model files never do")
            count = math.prod(shape)
            if count * dtype.itemsize != info.file_size - f.tell():
                raise ModelFileError(f"{where}: array {key!r} claims shape {shape} of {dtype} "
                                     f"({count * dtype.itemsize} bytes) but {info.file_size - f.tell()} bytes are "
                                     f"stored")
            data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise ModelFileError(f"{where}: array {key!r} is truncated")
        array = np.frombuffer(data, dtype=dtype, count=count)
        return array.reshape(shape, order="F" if fortran else "C").copy()


def _read_header(archive):
    path = archive.path
    if _HEADER not in archive.members:
        raise ModelFileError(f"{path!r} is not a minicompress model file (no {_HEADER})")
    raw = archive.read(_HEADER, "header", max_bytes=MAX_HEADER_BYTES)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path!r}: the header must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    text = raw.tobytes()
    depth = _nesting_depth(text)
    if depth > MAX_DEPTH:
        raise ModelFileError(f"{path!r}: the header nests {depth} levels deep; model files nest at most {MAX_DEPTH}")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path!r}: the header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path!r} is not a minicompress model file")
    version = header.get("version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{path!r} has format version {version!r}; expected a positive integer")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path!r} has format version {version}; this minicompress reads version "
                             f"{FORMAT_VERSION} and older: upgrade minicompress")
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path!r}: metadata must be a JSON object, got {type(metadata).__name__}")
    return header


class _Reader:
    def __init__(self, archive):
        from .quant.observer import _PartialWrapper
        from .quant.qconfig import QConfig
        self.archive = archive
        self.modules = _with_moved_names(_module_classes())
        self.hooks = _hook_classes()
        self.hook_functions = _forward_hook_functions()
        self.constants = _constants()
        self.data_classes = _with_moved_names(_data_classes())
        self.QConfig, self.PartialWrapper = QConfig, _PartialWrapper

    def array(self, key, where):
        return self.archive.read(key, where)

    def factory(self, body, where):
        if not isinstance(body, dict) or body.get("class") not in self.modules or not isinstance(body.get("kwargs"), dict):
            raise ModelFileError(f"{where}: malformed observer factory {str(body)[:80]!r}")
        cls = self.modules[body["class"]]
        kwargs = {k: self.value(v, f"{where}.{k}") for k, v in body["kwargs"].items()}
        return self.PartialWrapper(functools.partial(cls, **kwargs)) if kwargs else cls

    def value(self, value, where):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, dict) and len(value) == 1:
            (tag, body), = value.items()
            if tag == "__scalar__" and isinstance(body, list) and len(body) == 2 and isinstance(body[0], str):
                try:
                    dtype = np.dtype(body[0])
                except TypeError:
                    raise ModelFileError(f"{where}: unknown dtype {body[0]!r}") from None
                if dtype.kind not in "biuf" or isinstance(body[1], (list, dict, str)) or body[1] is None:
                    raise ModelFileError(f"{where}: bad scalar {str(body)[:80]!r}")
                with np.errstate(over="ignore"):
                    try:
                        return dtype.type(body[1])
                    except (OverflowError, ValueError):
                        raise ModelFileError(f"{where}: bad scalar {str(body)[:80]!r}") from None
            if tag == "__constant__":
                if not isinstance(body, str) or body not in self.constants:
                    raise ModelFileError(f"{where}: unknown constant {str(body)[:80]!r}")
                return self.constants[body]
            if tag == "__tensor__":
                return Tensor(self.array(body, where))
            if tag == "__array__":
                return self.array(body, where)
            if tag == "__dtype__":
                try:
                    return np.dtype(body)
                except TypeError:
                    raise ModelFileError(f"{where}: unknown dtype {str(body)[:80]!r}") from None
            if tag == "__qconfig__" and isinstance(body, dict) and set(body) == {"activation", "weight"}:
                return self.QConfig(self.factory(body["activation"], f"{where}.activation"),
                                    self.factory(body["weight"], f"{where}.weight"))
            if tag == "__factory__":
                return self.factory(body, where)
            if tag in ("__tuple__", "__list__", "__set__") and isinstance(body, list):
                items = [self.value(v, where) for v in body]
                return tuple(items) if tag == "__tuple__" else set(items) if tag == "__set__" else items
            if tag == "__dict__" and isinstance(body, dict):
                return {k: self.value(v, f"{where}.{k}") for k, v in body.items()}
            if tag == "__object__" and isinstance(body, dict) and body.get("class") in self.data_classes \
                    and isinstance(body.get("state", {}), dict):
                obj = object.__new__(self.data_classes[body["class"]])
                for key, item in body.get("state", {}).items():
                    object.__setattr__(obj, key, self.value(item, f"{where}.{key}"))
                return obj
        raise ModelFileError(f"{where}: unrecognised value {str(value)[:80]!r}")

    def module(self, node, where):
        label = where or "model"
        if not isinstance(node, dict) or "class" not in node:
            raise ModelFileError(f"{label}: malformed module entry")
        name = node["class"]
        if not isinstance(name, str) or name not in self.modules:
            raise ModelFileError(f"{label}: unknown layer type {str(name)[:80]!r}")
        for key in ("attributes", "parameters", "buffers", "children"):
            if not isinstance(node.get(key), dict):
                raise ModelFileError(f"{label}: malformed module entry ({key!r} must be a JSON object)")
        for key in ("non_persistent", "pre_hooks", "forward_hooks"):
            if not isinstance(node.get(key, []), list):
                raise ModelFileError(f"{label}: malformed module entry ({key!r} must be a JSON list)")
        module = self.modules[name].__new__(self.modules[name])
        Module.__init__(module)
        try:
            for key, value in node["attributes"].items():
                object.__setattr__(module, key, self.value(value, f"{where}.{key}"))
            for key, spec in node["parameters"].items():
                module._parameters[key] = None if spec is None else Parameter(
                    self.array(spec["array"], f"{where}.{key}"), requires_grad=bool(spec["requires_grad"]))
            for key, ref in node["buffers"].items():
                module._buffers[key] = None if ref is None else Tensor(self.array(ref, f"{where}.{key}"))
            module._non_persistent.update(str(k) for k in node.get("non_persistent", []))
            for key, child in node["children"].items():
                module._modules[key] = None if child is None else self.module(child, f"{where}.{key}" if where else key)
            for hook in node.get("pre_hooks", []):
                if not isinstance(hook, dict) or hook.get("class") not in self.hooks:
                    raise ModelFileError(f"{label}: unknown hook type {str(hook)[:80]!r}")
                instance = self.hooks[hook["class"]].from_config(self.value(hook["config"], f"{where}.hook"))
                module.register_forward_pre_hook(instance)
            for hook in node.get("forward_hooks", []):
                if not isinstance(hook, str) or hook not in self.hook_functions:
                    raise ModelFileError(f"{label}: unknown forward hook {str(hook)[:80]!r}")
                module.register_forward_hook(self.hook_functions[hook])
        except ModelFileError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"{label}: malformed entry ({type(exc).__name__}: {exc})") from None
        _check_sizes(module, label)
        return module


# ----- layer sizes against weight shapes --------------------------------------------------------

def _shape(value):
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


def _weight_shape(module):
    """The shape of a layer's weight wherever the layer keeps it: a parameter (or `weight_orig` under a
    pruning mask), a quantized tensor attribute, or a sparse layer's `weight_shape`."""
    for key in ("weight", "weight_orig"):
        if module._parameters.get(key) is not None:
            return tuple(module._parameters[key].shape)
    for key in ("_weight", "_packed_weight", "weight_q"):
        if _shape(module.__dict__.get(key)) is not None:
            return _shape(module.__dict__[key])
    if isinstance(module.__dict__.get("weight_shape"), tuple):
        return module.__dict__["weight_shape"]
    return None


def _required_attributes():
    """Attributes a layer of each kind always has (its constructor sets them) and `forward` reads."""
    from .nn import layers, rnn
    return ((layers.Linear, ("in_features", "out_features")),
            (layers.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")),
            (layers._BatchNorm, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
            (rnn._RNNBase, ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional")),
            (rnn._CellBase, ("input_size", "hidden_size", "bias")))


def _check_sizes(module, where):
    """A layer's constructor arguments as stored (in_features, out_channels, ...) against its weights."""
    d = module.__dict__
    for cls, names in _required_attributes():
        missing = [n for n in names if isinstance(module, cls) and n not in d]
        if missing:
            raise ModelFileError(f"{where}: a {type(module).__name__} entry without {', '.join(missing)}")
    weight = _weight_shape(module)
    expected = None
    if "in_features" in d and "out_features" in d:
        expected = (d["out_features"], d["in_features"])
    elif "in_channels" in d and "out_channels" in d and "kernel_size" in d:
        groups = d.get("groups", 1)
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ModelFileError(f"{where}: groups={groups!r} must be a positive int")
        kernel = d["kernel_size"]
        if not isinstance(kernel, tuple) or not isinstance(d["in_channels"], int):
            raise ModelFileError(f"{where}: malformed kernel_size {kernel!r} or in_channels {d['in_channels']!r}")
        expected = (d["out_channels"], d["in_channels"] // groups) + kernel
    if expected is not None and weight is not None and tuple(weight) != expected:
        raise ModelFileError(f"{where}: the stored sizes say a weight of shape {expected} but the weight has shape "
                             f"{tuple(weight)} (tampered file?)")
    _check_int4(module, where)
    if "num_features" in d:
        for key in ("weight", "bias"):
            if module._parameters.get(key) is not None and tuple(module._parameters[key].shape) != (d["num_features"],):
                raise ModelFileError(f"{where}: num_features={d['num_features']!r} but {key} has shape "
                                     f"{tuple(module._parameters[key].shape)}")
        for key in ("running_mean", "running_var"):
            if module._buffers.get(key) is not None and tuple(module._buffers[key].shape) != (d["num_features"],):
                raise ModelFileError(f"{where}: num_features={d['num_features']!r} but {key} has shape "
                                     f"{tuple(module._buffers[key].shape)}")
    if "input_size" in d and "hidden_size" in d:
        for key in list(module._parameters) + [k for k in d if k.startswith("weight_")]:
            value = module._parameters.get(key) if key in module._parameters else d.get(key)
            if not key.startswith("weight_") or _shape(value) is None:
                continue
            shape = _shape(value)
            width = d["hidden_size"] if key.startswith("weight_hh") else None
            if key.startswith("weight_ih") and key.endswith(("l0", "l0_reverse")) or key == "weight_ih":
                width = d["input_size"]
            if width is not None and (len(shape) != 2 or shape[1] != width):
                raise ModelFileError(f"{where}: {key} has shape {shape}, which does not match "
                                     f"input_size={d['input_size']!r}, hidden_size={d['hidden_size']!r}")


def _check_int4(module, where):
    """A weight-only layer's stored weight, scales, zero points and bias against its sizes: the int4
    kernel reads them without bounds checks, and a convolution's must still match its shape."""
    from .quant.int4 import check_packed
    from .quant.weight_only import Int4Conv2d, Int4Linear, _Int8WeightOnly
    if isinstance(module, _Int8WeightOnly):
        return _check_int8_weight_only(module, where)
    if not isinstance(module, (Int4Linear, Int4Conv2d)):
        return
    d, buffers = module.__dict__, module._buffers
    if isinstance(module, Int4Conv2d) and not (
            isinstance(d.get("groups"), int) and d["groups"] > 0 and isinstance(d.get("in_channels"), int)
            and isinstance(d.get("kernel_size"), tuple)
            and d.get("in_features") == d["in_channels"] // d["groups"] * int(np.prod(d["kernel_size"]))):
        raise ModelFileError(f"{where}: an Int4Conv2d entry whose in_features does not match in_channels / groups "
                             f"* kernel size")
    outputs = "out_channels" if isinstance(module, Int4Conv2d) else "out_features"
    for key, kind in (("in_features", int), (outputs, int), ("group_size", int), ("symmetric", bool)):
        if not isinstance(d.get(key), kind) or (kind is int and (isinstance(d[key], bool) or d[key] < 1)):
            raise ModelFileError(f"{where}: an {type(module).__name__} entry needs {key} as a positive "
                                 f"{kind.__name__}")
    data = {k: None if buffers.get(k) is None else buffers[k].data
            for k in ("weight_packed", "weight_scales", "weight_zero_points", "bias")}
    if (data["weight_zero_points"] is None) != d["symmetric"]:
        raise ModelFileError(f"{where}: symmetric={d['symmetric']} but weight_zero_points is "
                             f"{'missing' if data['weight_zero_points'] is None else 'present'}")
    try:
        from .quant.int4 import check_group_size
        check_group_size(d["group_size"])
        check_packed(data["weight_packed"], data["weight_scales"], data["weight_zero_points"], d["in_features"],
                     d[outputs], d["group_size"], where)
    except ValueError as exc:
        raise ModelFileError(str(exc)) from None
    bias = data["bias"]
    if bias is not None and (bias.dtype != np.float32 or bias.shape != (d[outputs],)):
        raise ModelFileError(f"{where}: bias must be float32 of shape ({d[outputs]},), got {bias.dtype} "
                             f"{bias.shape}")


def _check_int8_weight_only(module, where):
    d, buffers = module.__dict__, module._buffers
    try:
        shape = (int(d["out_features"]), int(d["in_features"])) if "in_features" in d else \
            (int(d["out_channels"]), int(d["in_channels"]) // int(d["groups"])) + tuple(map(int, d["kernel_size"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise ModelFileError(f"{where}: a {type(module).__name__} entry without its sizes") from None
    expected = {"weight_int8": (shape, np.int8), "weight_scales": (shape[:1], np.float32),
                "bias": (shape[:1], np.float32)}
    for key, (want, dtype) in expected.items():
        value = buffers.get(key)
        if key == "bias" and value is None:
            continue
        if value is None or value.data.dtype != dtype or tuple(value.data.shape) != want:
            raise ModelFileError(f"{where}: {key} must be {np.dtype(dtype).name} of shape {want}, got "
                                 f"{None if value is None else (value.data.dtype, value.data.shape)}")


def load(path) -> Module:
    """Read a model written by `save`. Raises `ModelFileError` for anything but a complete, valid file,
    FileNotFoundError when there is no file at `path`."""
    model, _ = _load(path, build=True)
    return model


def load_metadata(path) -> dict:
    """The `metadata` dict saved with the model at `path` ({} when none was given), without building the
    model. Raises as `load`."""
    _, metadata = _load(path, build=False)
    return metadata


def _load(path, build):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    archive = None
    try:
        archive = _Archive(path)
        header = _read_header(archive)
        model = _Reader(archive).module(header.get("model"), "") if build else None
        return model, header.get("metadata", {})
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError, TypeError,
            NotImplementedError, RuntimeError, OverflowError, MemoryError, RecursionError) as exc:
        # Whatever else a crafted file provokes (a zip member with an unsupported compression method, a
        # record that lies about its size) is still a bad file.
        raise ModelFileError(f"{path!r} is truncated or corrupted ({type(exc).__name__}: {exc})") from None
    finally:
        if archive is not None:
            archive.close()
