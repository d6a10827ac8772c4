"""Model files: `save(model, path)` and `load(path)`, with no pickle and nothing executed.

A model file is an uncompressed NumPy `.npz` archive holding

    __format__.json   {"format": "minicompress", "version": 1, "model": <module tree>}
    a0, a1, ...       the arrays (parameters, buffers, array attributes), referenced by name

The module tree names each module's class (which must be a `Module` subclass defined inside
minicompress: nothing else can be built), its plain attributes (numbers, strings, booleans, lists,
dicts, dtype and qscheme constants), its parameters, buffers and children, and its forward
pre-hooks when they are minicompress hook objects (pruning masks). Arrays are read with
`allow_pickle=False`. Loading builds the tree bottom-up and only returns it when every part was
read; any inconsistency raises `ModelFileError` naming what is wrong.

Writes are atomic: the archive goes to a temporary file in the same folder, which is renamed
over `path` only once it is complete, so a failed save leaves any old file intact.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .nn.module import Module, Parameter
from .tensor import Tensor

FORMAT_NAME = "minicompress"
FORMAT_VERSION = 1
_HEADER = "__format__.json"

# Attributes that hold transient configuration (observer factories, bound callables) rather than
# state; they are not saved and a loaded module does not have them.
TRANSIENT_ATTRIBUTES = {"qconfig", "_forward_hooks", "_forward_pre_hooks", "_bias_q_memo"}


class ModelFileError(ValueError):
    """A model file that cannot be read: truncated, corrupted, tampered, or from a newer version."""


# ----- the registry of buildable classes -------------------------------------------------------

def _all_subclasses(cls):
    stack, seen = [cls], []
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def _load_minicompress_modules():
    """Import the packages that define layers, so their classes are registered."""
    for name in ("nn", "quant", "prune", "distill", "models", "graph"):
        try:
            importlib.import_module(f"minicompress.{name}")
        except ImportError:
            pass


def _class_name(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _module_classes():
    _load_minicompress_modules()
    return {f"{c.__module__}.{c.__qualname__}": c for c in [Module] + _all_subclasses(Module)
            if c.__module__.startswith("minicompress.")}


def _hook_classes():
    """Forward pre-hook classes that can be saved: those defining `to_config` / `from_config`."""
    _load_minicompress_modules()
    found = {}
    for module_name in ("minicompress.prune",):
        try:
            package = importlib.import_module(module_name)
        except ImportError:
            continue
        for cls in getattr(package, "SERIALIZABLE_HOOKS", ()):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def _data_classes():
    """Plain-data value classes stored as their attributes (a quantized tensor: levels, scales, zero
    points, axis, qscheme), rebuilt without calling their constructor."""
    from .prune.sparse import CSRMatrix
    from .quant.qtensor import QTensor
    return {f"{c.__module__}.{c.__qualname__}": c for c in (QTensor, CSRMatrix)}


def _state(obj):
    """An object's attributes, whether it keeps them in __dict__ or __slots__."""
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    return {name: getattr(obj, name) for name in type(obj).__slots__ if hasattr(obj, name)}


def _constants():
    """dtype and qscheme constants stored by name."""
    try:
        from .quant import dtypes
    except ImportError:
        return {}
    return {name: value for name, value in vars(dtypes).items()
            if not name.startswith("_") and type(value).__module__ == dtypes.__name__ and not isinstance(value, type)}


# ----- encoding --------------------------------------------------------------------------------

class _Writer:
    def __init__(self):
        self.arrays = {}
        self.constants = {id(v): k for k, v in _constants().items()}
        self.data_classes = _data_classes()

    def array(self, array):
        key = f"a{len(self.arrays)}"
        self.arrays[key] = np.ascontiguousarray(array)
        return key

    def value(self, value, where):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return value.item()
        if id(value) in self.constants:
            return {"__constant__": self.constants[id(value)]}
        if isinstance(value, Tensor):
            return {"__tensor__": self.array(value.data)}
        if isinstance(value, np.ndarray):
            return {"__array__": self.array(value)}
        if isinstance(value, np.dtype):
            return {"__dtype__": value.name}
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
        if _class_name(module) not in _module_classes():
            raise TypeError(f"cannot save {where or 'the model'}: {_class_name(module)} is not a minicompress layer")
        attributes = {}
        for key, value in module.__dict__.items():
            if key in ("_parameters", "_buffers", "_modules", "_non_persistent") or key in TRANSIENT_ATTRIBUTES:
                continue
            attributes[key] = self.value(value, f"{where}.{key}" if where else key)
        hooks = []
        for hook in module._forward_pre_hooks.values():
            if not hasattr(hook, "to_config"):
                raise TypeError(f"cannot save {where or 'the model'}: its forward pre-hook {hook!r} is not model data")
            hooks.append({"class": _class_name(hook), "config": self.value(hook.to_config(), f"{where}.hook")})
        return {
            "class": _class_name(module),
            "attributes": attributes,
            "parameters": {k: None if p is None else {"array": self.array(p.data), "requires_grad": p.requires_grad}
                           for k, p in module._parameters.items()},
            "buffers": {k: None if b is None else self.array(b.data) for k, b in module._buffers.items()},
            "non_persistent": sorted(module._non_persistent),
            "children": {k: None if m is None else self.module(m, f"{where}.{k}" if where else k)
                         for k, m in module._modules.items()},
            "pre_hooks": hooks,
        }


def save(model: Module, path) -> None:
    """Write `model` to `path` atomically (temporary file, then rename)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    writer = _Writer()
    tree = writer.module(model, "")
    header = json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": tree})
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_HEADER: np.frombuffer(header.encode(), dtype=np.uint8)}, **writer.arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----- decoding --------------------------------------------------------------------------------

class _Reader:
    def __init__(self, archive):
        self.archive = archive
        self.modules = _module_classes()
        self.hooks = _hook_classes()
        self.constants = _constants()
        self.data_classes = _data_classes()

    def array(self, key, where):
        if not isinstance(key, str) or key not in self.archive.files:
            raise ModelFileError(f"{where}: array {key!r} is missing from the file")
        try:
            return np.array(self.archive[key], copy=True)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ModelFileError(f"{where}: array {key!r} is unreadable ({exc})") from exc

    def value(self, value, where):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, dict) and len(value) == 1:
            (tag, body), = value.items()
            if tag == "__constant__":
                if body not in self.constants:
                    raise ModelFileError(f"{where}: unknown constant {body!r}")
                return self.constants[body]
            if tag == "__tensor__":
                return Tensor(self.array(body, where))
            if tag == "__array__":
                return self.array(body, where)
            if tag == "__dtype__":
                try:
                    return np.dtype(body)
                except TypeError as exc:
                    raise ModelFileError(f"{where}: unknown dtype {body!r}") from exc
            if tag in ("__tuple__", "__list__", "__set__") and isinstance(body, list):
                items = [self.value(v, where) for v in body]
                return tuple(items) if tag == "__tuple__" else set(items) if tag == "__set__" else items
            if tag == "__dict__" and isinstance(body, dict):
                return {k: self.value(v, f"{where}.{k}") for k, v in body.items()}
            if tag == "__object__" and isinstance(body, dict) and body.get("class") in self.data_classes:
                obj = object.__new__(self.data_classes[body["class"]])
                for key, item in body.get("state", {}).items():
                    object.__setattr__(obj, key, self.value(item, f"{where}.{key}"))
                return obj
        raise ModelFileError(f"{where}: unrecognised value {str(value)[:80]!r}")

    def module(self, node, where):
        if not isinstance(node, dict) or "class" not in node:
            raise ModelFileError(f"{where or 'model'}: malformed module entry")
        name = node["class"]
        if name not in self.modules:
            raise ModelFileError(f"{where or 'model'}: unknown layer type {name!r}")
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
            module._non_persistent.update(node.get("non_persistent", []))
            for key, child in node["children"].items():
                module._modules[key] = None if child is None else self.module(child, f"{where}.{key}" if where else key)
            for hook in node.get("pre_hooks", []):
                if hook.get("class") not in self.hooks:
                    raise ModelFileError(f"{where or 'model'}: unknown hook type {hook.get('class')!r}")
                instance = self.hooks[hook["class"]].from_config(self.value(hook["config"], f"{where}.hook"))
                module.register_forward_pre_hook(instance)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{where or 'model'}: malformed entry ({exc})") from exc
        return module


def load(path) -> Module:
    """Read a model written by `save`. Raises `ModelFileError` for anything but a complete, valid file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if _HEADER not in archive.files:
                raise ModelFileError(f"{path!r} is not a minicompress model file (no {_HEADER})")
            header = json.loads(bytes(archive[_HEADER]).decode())
            if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                raise ModelFileError(f"{path!r} is not a minicompress model file")
            version = header.get("version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise ModelFileError(f"{path!r} has format version {version!r}; this minicompress reads "
                                     f"version {FORMAT_VERSION} and older: upgrade minicompress")
            return _Reader(archive).module(header.get("model"), "")
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, UnicodeDecodeError, KeyError) as exc:
        raise ModelFileError(f"{path!r} is truncated or corrupted ({type(exc).__name__}: {exc})") from exc
