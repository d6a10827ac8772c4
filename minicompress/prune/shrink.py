"""shrink: channel-pruned layers become smaller dense layers.

After `ln_structured(conv, "weight", amount, n=2, dim=0)` (and `strip_pruning`) a pruned output
channel of a Conv2d or Linear is a slice of zeros: it computes nothing but its bias (a constant), yet
costs as much as before.
`shrink(model)` returns a copy in which those channels are gone:

    - the pruned output channels of the Conv2d / Linear (weight rows, bias entries);
    - the matching entries of whatever acts on each channel separately downstream: BatchNorm
      (weight, bias, running statistics), activations, pooling, dropout, quant stubs, Flatten after
      a global pool, and a depthwise Conv2d, which loses the same channels and passes the removal on;
    - the matching input channels (weight columns) of the next Conv2d / Linear, which ends the chain.

How the layer order is found: the forward is traced once on `example_input` with a forward hook on
every leaf module, recording which tensor each call reads and writes. Tensors are then grouped:
the input and output of a per-channel layer (BatchNorm, ReLU, depthwise conv, ...) are one group,
and so are both inputs and the output of a residual `nn.Add`, whose channels must line up. A channel
of a group can be removed only if EVERY Conv2d / Linear writing into the group has pruned it (the
residual case keeps the channels that either branch needs); a group touching anything else (the
model's input or output, a layer of unknown kind, a grouped conv that is not depthwise) keeps all
its channels. Each group keeps at least one channel. A tensor computed outside a module (an
operator in a forward method) cannot be followed, and raises an error naming the layer.
`tied_output_groups` lists the Conv2d / Linear layers of each group, so that they can prune on one
shared ranking and lose the same channels.

Exactness: a removed channel is its bias b_c where its conv writes it (zero without a bias), and a
BatchNorm after it (eval mode) turns that into the constant beta + gamma * (b_c - running_mean) /
sqrt(running_var + eps), which flows on.
`shrink` follows that constant: each layer between the producer and the next Conv2d / Linear is run
once on an input holding the constant (`_removed_constants`). Where it reaches the consumer uniform
over space (always for a Linear after global pooling; for a conv without padding), its contribution
W[:, removed] @ constants is added to the consumer's bias (created if absent), so the outputs still
equal the masked model's. A nonzero constant that a padded conv (a depthwise 3x3, say) spreads
unevenly cannot be folded: `shrink` drops it and warns, naming the layer, the constant and the
largest change of the model's output on `example_input`; a short fine-tune recovers, and pruning
the bias (and BatchNorm weight and bias) of the same channels makes the shrink exact.
"""
import copy
import warnings

import numpy as np

from ..autograd import no_grad
from ..nn.activation import (ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, LeakyReLU, MaxPool2d, ReLU, ReLU6,
                             Sigmoid, Tanh)
from ..nn.layers import Add, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, Linear
from ..nn.module import Module, Parameter
from ..quant.stubs import DeQuantStub, QuantStub
from ..tensor import Tensor
from .gradual import strip_pruning

PER_CHANNEL = (BatchNorm1d, BatchNorm2d, ReLU, ReLU6, LeakyReLU, ELU, GELU, Sigmoid, Tanh, Dropout,
               MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Identity, QuantStub, DeQuantStub)


def _is_dense(m):
    return isinstance(m, Linear) or (isinstance(m, Conv2d) and m.groups == 1)


def _is_depthwise(m):
    return isinstance(m, Conv2d) and m.groups == m.in_channels == m.out_channels and m.groups > 1


def _trace(model, example_input):
    """[(name, module, [input tensors], output tensor)] of every leaf-module call, in call order."""
    calls, handles = [], []
    for name, module in model.named_modules():
        if next(module.children(), None) is None and module is not model:
            def hook(mod, args, output, name=name):
                calls.append((name, mod, [a for a in args if isinstance(a, Tensor)], output))
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            output = model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls, output


def _example_input(model, example_input):
    """example_input as a Tensor, or the default one (`_default_input`) when None."""
    if example_input is None:
        return _default_input(model)
    return example_input if isinstance(example_input, Tensor) else Tensor(np.asarray(example_input, np.float32))


def _default_input(model):
    """Zeros of the model's `input_shape` (C, H, W) when it declares one (a detector's image size),
    else of the first layer's input at the digits' size."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return Tensor(np.zeros((1, *shape), np.float32))
    for m in model.modules():
        if isinstance(m, Conv2d):
            return Tensor(np.zeros((1, m.in_channels, 8, 8), np.float32))
        if isinstance(m, Linear):
            return Tensor(np.zeros((1, m.in_features), np.float32))
    raise ValueError("model has no Conv2d or Linear layer to shrink")


class _Groups:
    """Union-find over traced tensors (by id); each root carries the channel count, whether the group
    must keep everything, and the AND of the pruned-channel masks of the layers writing into it."""

    def __init__(self):
        self.parent, self.width, self.fixed, self.pruned = {}, {}, {}, {}

    def add(self, t):
        key = id(t)
        if key not in self.parent:
            width = t.shape[1] if t.ndim in (2, 4) else None
            self.parent[key], self.width[key] = key, width
            self.fixed[key], self.pruned[key] = width is None, None
        return key

    def find(self, t):
        key = self.add(t) if isinstance(t, Tensor) else t
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a, b, where):
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.width[ra] != self.width[rb]:
            raise ValueError(f"cannot shrink: {where} ties tensors of {self.width[ra]} and {self.width[rb]} channels")
        self.parent[rb] = ra
        self.fixed[ra] = self.fixed[ra] or self.fixed[rb]
        self.pruned[ra] = self._and(self.pruned[ra], self.pruned[rb])

    @staticmethod
    def _and(a, b):
        return b if a is None else a if b is None else a & b

    def fix(self, t):
        self.fixed[self.find(t)] = True

    def source(self, t, pruned):
        root = self.find(t)
        self.pruned[root] = self._and(self.pruned[root], pruned)

    def keep(self, t):
        """Boolean mask of the channels the group of t keeps (at least one)."""
        root = self.find(t)
        if self.width[root] is None:
            return None
        if self.fixed[root] or self.pruned[root] is None:
            return np.ones(self.width[root], bool)
        keep = ~self.pruned[root]
        if not keep.any():
            keep[0] = True
        return keep


def _pruned_outputs(module):
    """Output channels of a dense layer whose weight slice is all zero. Such a channel ignores its
    input: it is the constant bias[c] everywhere (0 without a bias), which `_removed_constants`
    carries on to the next dense layer."""
    w = module.weight.data.reshape(module.weight.shape[0], -1)
    return ~np.any(w != 0, axis=1)


def _build_groups(calls, example_input, output):
    groups = _Groups()
    produced = {id(example_input)} | {id(out) for _, _, _, out in calls}
    consumed = set()
    groups.fix(example_input)
    groups.fix(output)
    first_call = {}
    for name, module, inputs, out in calls:
        # A layer with weights called again (a detection head shared by pyramid levels) must keep the
        # same input and output channels on every call: its tensors are tied to those of its first
        # call. (Parameter-free layers such as a DeQuantStub may see unrelated tensors each time.)
        if not module._parameters:
            pass
        elif id(module) in first_call:
            for a, b in zip(first_call[id(module)], inputs + [out]):
                groups.union(a, b, f"layer {name!r} called again")
        else:
            first_call[id(module)] = inputs + [out]
        for t in inputs:
            if id(t) not in produced:
                raise ValueError(f"cannot shrink: the input of layer {name!r} is computed outside a module; "
                                 "express that operation as a module (e.g. nn.Add) or shrink by hand")
            consumed.add(id(t))
        where = f"layer {name!r} ({type(module).__name__})"
        if _is_dense(module):
            groups.source(out, _pruned_outputs(module))
            groups.add(inputs[0])
        elif _is_depthwise(module) or isinstance(module, PER_CHANNEL) or isinstance(module, Add):
            for t in inputs:
                groups.union(out, t, where)
        elif isinstance(module, Flatten) and inputs[0].ndim in (2, 4) and int(np.prod(inputs[0].shape[2:])) == 1 \
                and out.ndim == 2:
            groups.union(out, inputs[0], where)
        else:
            for t in inputs + [out]:
                groups.fix(t)
    for name, module, _, out in calls:
        if id(out) not in consumed and out is not output:
            raise ValueError(f"cannot shrink: the output of layer {name!r} is used outside a module "
                             "(an operator in a forward method), so its channels cannot be followed")
    return groups


def _slice_parameter(module, key, index, axis=0):
    value = module._parameters.get(key) if key in module._parameters else None
    if value is not None:
        module._parameters[key] = Parameter(np.ascontiguousarray(np.take(value.data, index, axis=axis)),
                                            requires_grad=value.requires_grad)


def _removed_constants(calls, groups, example_input):
    """{id(tensor): per-channel value of the removed channels (NaN where not uniform over space)}.

    A removed channel leaves its dense producer as its bias (zeros without one, or where the bias was
    pruned too); every per-channel layer after it is run on
    an input filled with the channel's current constant (other channels zero) and the output read
    back, so BatchNorm, activations, pooling and depthwise convs are applied exactly as in forward."""
    constants = {}

    def uniform(array):
        flat = array.reshape(array.shape[0], array.shape[1], -1)[0]
        values = flat[:, 0].astype(np.float64)
        values[~np.all(flat == flat[:, :1], axis=1)] = np.nan
        return values

    for name, module, inputs, out in calls:
        if _is_dense(module):
            bias = module.bias
            constants[id(out)] = np.zeros(out.shape[1]) if bias is None else bias.data.astype(np.float64)
        elif isinstance(module, Add) and all(id(t) in constants for t in inputs):
            constants[id(out)] = sum(constants[id(t)] for t in inputs)
        elif (_is_depthwise(module) or isinstance(module, PER_CHANNEL + (Flatten,))) and id(inputs[0]) in constants:
            value = np.nan_to_num(constants[id(inputs[0])], nan=0.0)
            shape = (1,) + tuple(inputs[0].shape[1:])
            filled = np.broadcast_to(value.reshape((-1,) + (1,) * (len(shape) - 2)), shape).astype(np.float32)
            with no_grad():
                result = uniform(module(Tensor(np.ascontiguousarray(filled))).data)
            result[np.isnan(constants[id(inputs[0])])] = np.nan
            constants[id(out)] = result
    return constants


def _fold(module, removed, values):
    """Add the removed input channels' constant contribution to `module`'s bias; False if the
    contribution is not uniform over space (it is then left out)."""
    if not np.any(values[removed] != 0):
        return True
    if np.any(np.isnan(values[removed])):
        return False
    weight = module.weight.data
    if isinstance(module, Conv2d):
        if module.padding != (0, 0):
            return False
        weight = weight.sum(axis=(2, 3))
    shift = (weight[:, removed].astype(np.float64) @ values[removed]).astype(weight.dtype)
    bias = np.zeros(weight.shape[0], weight.dtype) if module.bias is None else module.bias.data
    module.bias = Parameter(bias + shift)
    return True


def _apply(calls, groups, constants):
    done, dropped = {}, []
    for name, module, inputs, out in calls:
        if not (_is_dense(module) or _is_depthwise(module) or isinstance(module, (BatchNorm1d, BatchNorm2d))):
            continue
        keep_in, keep_out = groups.keep(inputs[0]), groups.keep(out)
        signature = (keep_in.tobytes(), keep_out.tobytes())
        if id(module) in done:
            if done[id(module)] != signature:
                raise ValueError(f"cannot shrink: layer {name!r} is called twice with different channels")
            continue
        done[id(module)] = signature
        rows, cols = np.flatnonzero(keep_out), np.flatnonzero(keep_in)
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            for key in ("weight", "bias"):
                _slice_parameter(module, key, rows)
            for key in ("running_mean", "running_var"):
                if module._buffers.get(key) is not None:
                    module._buffers[key] = Tensor(np.ascontiguousarray(module._buffers[key].data[rows]))
            module.num_features = len(rows)
            continue
        if _is_dense(module) and not keep_in.all():
            values = constants.get(id(inputs[0]))
            if values is None or not _fold(module, ~keep_in, values):
                finite = np.nan_to_num(values[~keep_in], nan=np.inf) if values is not None else [np.inf]
                dropped.append((name, float(np.max(np.abs(finite)))))
        _slice_parameter(module, "weight", rows)
        _slice_parameter(module, "bias", rows)
        if isinstance(module, Linear):
            _slice_parameter(module, "weight", cols, axis=1)
            module.in_features, module.out_features = len(cols), len(rows)
        elif _is_depthwise(module):
            module.in_channels = module.out_channels = module.groups = len(rows)
        else:
            _slice_parameter(module, "weight", cols, axis=1)
            module.in_channels, module.out_channels = len(cols), len(rows)
    return dropped


def tied_output_groups(model, example_input=None):
    """The Conv2d / Linear layers whose output channels `shrink` ties together, as lists.

    Layers whose outputs meet at a residual `nn.Add` (directly or through per-channel layers) form one
    list: `shrink` removes a channel there only if every layer of the list has pruned it, so pruning them
    one by one removes fewer channels than asked. Give each list one shared channel ranking (for example
    `ln_structured(..., importance_scores=...)` from their summed channel norms) to remove what was asked.
    A layer whose channels must all stay (it writes the model's output, say) is in no list; every other
    Conv2d / Linear is in exactly one, in forward order. `example_input` as in `shrink`.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    example_input = _example_input(model, example_input)
    calls, output = _trace(model, example_input)
    groups = _build_groups(calls, example_input, output)
    tied = {}
    for _, module, _, out in calls:
        root = groups.find(out)
        if _is_dense(module) and not groups.fixed[root] and all(module is not m for m in tied.get(root, [])):
            tied.setdefault(root, []).append(module)
    return list(tied.values())


def shrink(model, example_input=None):
    """A copy of `model` with channel-pruned Conv2d / Linear layers cut down to dense layers of the
    channels that remain (see the module docstring for what is removed and how it is found).

    Pruning reparametrizations are made permanent in the copy first (`strip_pruning`); `model`
    itself is not modified.

    Args:
        model: a Module, typically after `ln_structured(..., n=2, dim=0)` on its convolutions.
        example_input: a Tensor the model accepts, to trace the forward; by default zeros of shape
            (1, *model.input_shape) when the model has that attribute, else (1, in_channels, 8, 8)
            for a first Conv2d (the digits' size) or (1, in_features) for a first Linear.

    Returns:
        the shrunk copy; in eval mode its outputs equal those of the masked model (see Exactness).

    Raises:
        ValueError: naming the layer, when the forward uses a tensor that no module produced.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    model = strip_pruning(copy.deepcopy(model))
    example_input = _example_input(model, example_input)
    calls, output = _trace(model, example_input)
    groups = _build_groups(calls, example_input, output)
    was_training = model.training
    model.eval()
    try:
        constants = _removed_constants(calls, groups, example_input)
    finally:
        model.train(was_training)
    dropped = _apply(calls, groups, constants)
    if dropped:
        layers = ", ".join(f"{name!r} (constant up to {value:.3g})" for name, value in dropped)
        warnings.warn(f"shrink dropped removed channels that reach these layers as nonzero constants it cannot "
                      f"fold into their bias (a conv bias or BatchNorm constant spread unevenly by a padded conv): "
                      f"{layers}; largest output change on example_input: "
                      f"{_output_change(model, example_input, output):.3g} (prune the bias, and any BatchNorm "
                      f"weight and bias, of those channels too for an exact shrink, or fine-tune afterwards)",
                      stacklevel=2)
    return model


def _output_change(shrunk, example_input, output):
    """max |shrunk(example_input) - output| in eval mode, `output` being the unshrunk model's."""
    was_training = shrunk.training
    shrunk.eval()
    try:
        with no_grad():
            changed = shrunk(example_input)
    finally:
        shrunk.train(was_training)
    if not (isinstance(changed, Tensor) and isinstance(output, Tensor)):
        return float("nan")
    return float(np.max(np.abs(changed.data.astype(np.float64) - output.data), initial=0.0))
