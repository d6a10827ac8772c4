"""The pruning reparametrization, kept in one place.

Pruning parameter `name` of a module (as torch.nn.utils.prune does) replaces it by

    <name>_orig    the Parameter itself, still trained
    <name>_mask    a buffer of 0s and 1s of the same shape (saved in the state_dict)
    <name>         a plain attribute, recomputed as  <name>_orig * <name>_mask  before every forward

by a forward pre-hook, `PruningReparam`. Because `<name>` is a product computed in the graph, the
gradient that reaches `<name>_orig` is the weight's gradient times the mask: pruned entries receive
zero gradient and the optimizer leaves them where they are (weight decay and momentum aside), while
the forward only ever sees the masked weight.

`remove` folds the mask in for good: `<name>` becomes a Parameter again, holding zeros where pruned,
and `<name>_orig`, `<name>_mask` and the hook disappear (torch.nn.utils.prune.remove).

The hook stores only the parameter name and a readable history of the methods applied; the mask is
the state. `to_config` / `from_config` make it saveable by `minicompress.io`.
"""
import numpy as np

from ..nn.module import Module, Parameter
from ..tensor import Tensor


class PruningReparam:
    """Forward pre-hook recomputing `module.<name> = module.<name>_orig * module.<name>_mask`.

    `history` lists the repr of every pruning method applied to the tensor, oldest first
    (torch keeps the methods themselves in a PruningContainer; here composition is a function of
    the stored mask, see `methods.compose_mask`, so a description is enough).
    """

    def __init__(self, name, history=()):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self.history = list(history)

    def __call__(self, module, inputs):
        object.__setattr__(module, self.name, apply_mask(module, self.name))

    def to_config(self):
        return {"name": self.name, "history": list(self.history)}

    @classmethod
    def from_config(cls, config):
        return cls(config["name"], config.get("history", ()))

    def __repr__(self):
        return f"PruningReparam(name={self.name!r}, history={self.history!r})"


def apply_mask(module, name):
    """The pruned tensor `<name>_orig * <name>_mask`, in the graph (gradients reach `<name>_orig`)."""
    return getattr(module, name + "_orig") * getattr(module, name + "_mask")


def find_hook(module, name):
    """The PruningReparam of `module` for parameter `name`, or None if that tensor is not pruned."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, PruningReparam) and hook.name == name:
            return hook
    return None


def check_target(module, name):
    """Validate (module, name) as something that can be pruned: a Module with a parameter `name`
    (or an already pruned one). Raises TypeError / ValueError naming what is wrong."""
    if not isinstance(module, Module):
        raise TypeError(f"module must be a minicompress.nn.Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    if find_hook(module, name) is None and module._parameters.get(name) is None:
        available = [k for k, v in module._parameters.items() if v is not None]
        raise ValueError(f"name={name!r}: {type(module).__name__} has no parameter of that name "
                         f"(parameters: {available})")


def set_mask(module, name, mask, description=None):
    """Make `mask` the mask of `module.<name>`, reparametrizing the module first if needed.

    The mask replaces any earlier one (callers compose beforehand when they mean to). Returns the
    hook. This is the only place where `<name>_orig`, `<name>_mask` and the hook are created.
    """
    check_target(module, name)
    hook = find_hook(module, name)
    if hook is None:
        orig = module._parameters.pop(name)
        module.register_parameter(name + "_orig", orig)
        hook = PruningReparam(name)
        module.register_forward_pre_hook(hook)
    orig = getattr(module, name + "_orig")
    mask = np.asarray(mask)
    if mask.shape != orig.shape:
        raise ValueError(f"mask shape {mask.shape} must equal the shape of {name!r}, {orig.shape}")
    module.register_buffer(name + "_mask", Tensor(mask.astype(orig.dtype)))
    if description is not None:
        hook.history.append(description)
    object.__setattr__(module, name, apply_mask(module, name))
    return hook


def current_mask(module, name):
    """The mask array of `module.<name>`: the stored one if pruned, else ones."""
    if find_hook(module, name) is not None:
        return getattr(module, name + "_mask").data
    return np.ones(module._parameters[name].shape, dtype=module._parameters[name].dtype)


def original(module, name):
    """The unmasked tensor array (`<name>_orig` if pruned, else the parameter)."""
    return getattr(module, name + "_orig").data if find_hook(module, name) is not None else module._parameters[name].data


def remove(module, name):
    """Make the pruning of `module.<name>` permanent (torch.nn.utils.prune.remove): `<name>` becomes a
    Parameter holding `<name>_orig * <name>_mask` (zeros where pruned); `<name>_orig`, `<name>_mask`
    and the hook are deleted. Returns module.

    Raises:
        ValueError: if `module.<name>` is not pruned.
    """
    if not isinstance(module, Module):
        raise TypeError(f"module must be a minicompress.nn.Module, got {type(module).__name__}")
    hook = find_hook(module, name)
    if hook is None:
        raise ValueError(f"parameter {name!r} of {type(module).__name__} has to be pruned before pruning can "
                         "be removed")
    orig = getattr(module, name + "_orig")
    weight = Parameter(orig.data * getattr(module, name + "_mask").data.astype(orig.dtype),
                       requires_grad=orig.requires_grad)
    del module._parameters[name + "_orig"]
    del module._buffers[name + "_mask"]
    module.__dict__.pop(name, None)
    for key, value in list(module._forward_pre_hooks.items()):
        if value is hook:
            del module._forward_pre_hooks[key]
    module.register_parameter(name, weight)
    return module


def is_pruned(module):
    """True if `module` or any module inside it holds a pruning reparametrization
    (torch.nn.utils.prune.is_pruned)."""
    if not isinstance(module, Module):
        raise TypeError(f"module must be a minicompress.nn.Module, got {type(module).__name__}")
    return any(isinstance(h, PruningReparam) for m in module.modules() for h in m._forward_pre_hooks.values())


def pruned_parameters(model):
    """[(qualified module name, module, parameter name)] of every pruned tensor in model."""
    return [(prefix, m, h.name) for prefix, m in model.named_modules()
            for h in list(m._forward_pre_hooks.values()) if isinstance(h, PruningReparam)]
