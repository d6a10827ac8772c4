"""`Module` and `Parameter`: the container that owns parameters, buffers and sub-modules.

Attribute assignment registers things, as in torch: a `Parameter` goes to `_parameters`, a
`Module` to `_modules`, and `register_buffer` adds a non-trainable tensor to `_buffers`.
`state_dict()` keys are dotted paths identical to torch's for the same architecture.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a Module registers as trainable (requires_grad=True by default)."""

    def __init__(self, data, requires_grad=True):
        array = data.data if isinstance(data, Tensor) else np.asarray(data, dtype=np.float32)
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """Returned by `register_*_hook`; `remove()` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self.hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Module:
    """Base class of every layer and model."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----- registration ----------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"cannot assign {name!r} before Module.__init__() is called")
        if isinstance(value, (Parameter, Module)):
            self.__dict__.pop(name, None)
            target = self._parameters if isinstance(value, Parameter) else self._modules
            for store in (self._parameters, self._buffers, self._modules):
                if store is not target:
                    store.pop(name, None)
            target[name] = value            # a replaced entry keeps its place (a Sequential's order), as in torch
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(value).__name__}")
            self._buffers[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "parameter" if name in self._parameters else "module"
                raise TypeError(f"cannot assign {type(value).__name__} to {kind} {name!r} "
                                f"(expected a {kind.capitalize()} or None)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        if param is None:
            self._parameters[name] = None
        elif not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a Parameter, got {type(param).__name__}")
        else:
            self.__dict__.pop(name, None)
            self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{name!r} must be a Module, got {type(module).__name__}")
        self._modules[name] = module

    register_module = add_module

    # ----- traversal -------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix=""):
        """Every module in the tree, depth first, each once, with its dotted name."""
        memo = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if module is None or id(module) in memo:
                continue
            memo.add(id(module))
            yield name, module
            children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, store, recurse=True):
        seen = set()
        modules = self.named_modules() if recurse else [("", self)]
        for prefix, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, prefix="", recurse=True):
        for name, p in self._named_members("_parameters", recurse):
            yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        for name, b in self._named_members("_buffers", recurse):
            yield (f"{prefix}.{name}" if prefix else name), b

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target):
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (looking up {target!r})")
            module = module._modules[part]
        return module

    def set_submodule(self, target, new_module):
        parent_name, _, child = target.rpartition(".")
        setattr(self.get_submodule(parent_name), child, new_module)

    # ----- modes -----------------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            p.grad = None

    def apply(self, fn):
        for m in list(self.modules())[::-1]:
            fn(m)
        return self

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self, prefix=""):
        """An ordered mapping from dotted names to tensors (parameters, then persistent buffers,
        per module, in registration order), as torch."""
        out = OrderedDict()
        for name, module in self.named_modules(prefix=prefix.rstrip(".")):
            dot = f"{name}." if name else ""
            for key, p in module._parameters.items():
                if p is not None:
                    out[dot + key] = p.detach()
            for key, b in module._buffers.items():
                if b is not None and key not in module._non_persistent:
                    out[dot + key] = b.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into this module's tensors. With `strict`, missing or unexpected keys raise;
        a shape mismatch always raises. Returns (missing_keys, unexpected_keys)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                           f"missing keys {missing}, unexpected keys {unexpected}")
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = np.asarray(value.data if isinstance(value, Tensor) else value)
            if array.shape != target.shape:
                raise ValueError(f"size mismatch for {key}: copying a param with shape {array.shape}, "
                                 f"the shape in the current model is {target.shape}")
            target.data[...] = array.astype(target.dtype, copy=False)
        return missing, unexpected

    # ----- hooks and calling -----------------------------------------------------------------
    def register_forward_pre_hook(self, hook):
        """hook(module, args) -> None or new args; runs before forward."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook):
        """hook(module, args, output) -> None or a new output; runs after forward."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    # ----- printing --------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()
                 if m is not None]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"
