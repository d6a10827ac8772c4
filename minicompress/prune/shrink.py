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

How the channel dependencies are found: from the graph. A GraphModule (an imported ONNX model) is
used as it is; any other model is traced once on `example_input` (`graph.trace`, which shares its
layers, so slicing them shrinks the copy). The graph runs once keeping every value, and the channels
(axis 1) of the values are joined in one union-find over channels:

    per-channel layers and operators   BatchNorm, ReLU / Relu, Clip, pools, Dropout, Identity, quant
                                       stubs, a depthwise conv: channel c of the input is channel c
                                       of the output
    residual add (nn.Add, Add)         channel c of every input and of the output
    Concat (axis 1)                    channel c of input k is channel offset_k + c of the output
    Flatten / Reshape(batch, -1)       feature c * spatial + s of the output is channel c of the input
    into a Linear / Gemm               (spatial = H * W of the flattened tensor)

A channel can be removed only if EVERY Conv2d / Linear writing into its set has pruned it (a residual
add keeps the channels that either branch needs); a set touching anything else (the model's input or
output, a layer or operator of unknown kind, a grouped conv that is not depthwise) keeps all its
channels, and every dense layer keeps at least one output channel. A tensor computed outside a module
(an operator in a forward method) cannot be traced and raises an error naming the layer; load such a
model as a GraphModule instead. `tied_output_groups` lists the Conv2d / Linear layers whose outputs
share channel sets, so that they can prune on one shared ranking and lose the same channels.

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
from ..graph.module import GraphModule
from ..graph.trace import TraceError, trace
from ..nn.module import Module, Parameter
from ..nn.stubs import DeQuantStub, QuantStub
from ..tensor import Tensor
from .gradual import strip_pruning

PER_CHANNEL = (BatchNorm1d, BatchNorm2d, ReLU, ReLU6, LeakyReLU, ELU, GELU, Sigmoid, Tanh, Dropout,
               MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Identity, QuantStub, DeQuantStub)


def _is_dense(m):
    return isinstance(m, Linear) or (isinstance(m, Conv2d) and m.groups == 1)


def _is_depthwise(m):
    return isinstance(m, Conv2d) and m.groups == m.in_channels == m.out_channels and m.groups > 1


def _example_input(model, example_input):
    """example_input as a Tensor, or the default one (`_default_input`) when None."""
    if example_input is None:
        return _default_input(model)
    return example_input if isinstance(example_input, Tensor) else Tensor(np.asarray(example_input, np.float32))


def _default_input(model):
    """Zeros of the model's `input_shape` (C, H, W) when it declares one (a detector's image size), of a
    GraphModule's declared input shape, else of the first layer's input at the digits' size."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return Tensor(np.zeros((1, *shape), np.float32))
    if isinstance(model, GraphModule) and len(model.inputs) == 1 and model.inputs[0].get("shape"):
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in model.inputs[0]["shape"]]
        return Tensor(np.zeros(shape, np.dtype(model.inputs[0].get("dtype") or "float32")))
    for m in model.modules():
        if isinstance(m, Conv2d):
            return Tensor(np.zeros((1, m.in_channels, 8, 8), np.float32))
        if isinstance(m, Linear):
            return Tensor(np.zeros((1, m.in_features), np.float32))
    raise ValueError("model has no Conv2d or Linear layer to shrink")


class _Operator:
    """An operator node as a callable on its first input (the others are the graph's constants), so that
    `_removed_constants` runs it like a layer."""

    def __init__(self, graph, node):
        self.graph, self.node, self.op_type = graph, node, node["op_type"]
        self.attrs = node.get("attrs", {})

    def __call__(self, x):
        args = [x]
        for v in self.node["inputs"][1:]:
            if v and v in self.graph.constants:
                buffer, shape = self.graph.constants[v]
                args.append(Tensor._wrap(self.graph._buffers[buffer].data.reshape(shape)))
            else:
                args.append(None)
        return _as_tensor(self.graph._run_node(self.node, args)[0])


def _as_tensor(value):
    return value if isinstance(value, Tensor) else Tensor._wrap(np.asarray(value))


def _graph(model, example_input):
    """The GraphModule whose nodes shrink follows: the model itself, or its trace (sharing its layers)."""
    if isinstance(model, GraphModule):
        return model
    try:
        return trace(model, example_input, unread_outputs=True)
    except TraceError as exc:
        where = f"the input of layer {exc.layer!r}" if exc.layer else "the model's output"
        raise ValueError(f"cannot shrink: {where} is computed outside a module (an operator in a forward "
                         "method); express that operation as a module (e.g. nn.Add), load the model as a "
                         "GraphModule, or shrink by hand") from None


def _calls(graph, example_input):
    """[(name, layer or _Operator, [data input tensors], output tensor or None)] in node order, the inputs
    and output of the run, from one eval-mode run of the graph keeping every value."""
    was_training = graph.training
    graph.eval()
    try:
        with no_grad():
            outputs, env = graph.run(example_input, keep="all")
    finally:
        graph.train(was_training)
    calls = []
    for node in graph.nodes:
        data = [env[v] for v in node["inputs"] if v and v not in graph.constants]
        outs = [v for v in node["outputs"] if v]
        out = env[outs[0]] if len(outs) == 1 and len(node["outputs"]) == 1 else None
        if node["kind"] == "module":
            calls.append((node["target"], graph.get_submodule(node["target"]), data, out))
        else:
            calls.append((node["name"], _Operator(graph, node), data, out))
    inputs = [env[spec["name"]] for spec in graph.inputs]
    return calls, inputs, list(outputs)


# operators that act on each channel separately (axis 1), as the PER_CHANNEL layers
_PER_CHANNEL_OPS = {"Relu", "Clip", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
                    "Softplus", "Gelu", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                    "Identity", "Dropout"}


def _width(t):
    return t.shape[1] if isinstance(t, Tensor) and t.ndim in (2, 4) else None


def _kind(layer, ins, out):
    """How a call ties channels: 'dense', 'per_channel', 'add', 'concat', 'flatten' or 'other'."""
    if out is None or not ins:
        return "other"
    if isinstance(layer, _Operator):
        op = layer.op_type
        if op in _PER_CHANNEL_OPS and len(ins) == 1 and out.shape[:2] == ins[0].shape[:2]:
            return "per_channel"
        if op in ("Add", "Sum") and len(ins) >= 2 and all(t.shape == out.shape for t in ins):
            return "add"
        if op == "Concat" and layer.attrs.get("axis", 0) % max(out.ndim, 1) == 1:
            return "concat"
        if op == "Flatten" and layer.attrs.get("axis", 1) == 1 or op == "Reshape" and _flattening_reshape(layer):
            return "flatten"
        return "other"
    if _is_dense(layer):
        return "dense"
    if _is_depthwise(layer) or isinstance(layer, PER_CHANNEL):
        return "per_channel"
    if isinstance(layer, Add):
        return "add"
    if isinstance(layer, Flatten):
        return "flatten"
    return "other"


def _flattening_reshape(op):
    """A Reshape to (batch, -1): its shape survives a change of the channel count."""
    shape = op.node["inputs"][1] if len(op.node["inputs"]) > 1 else None
    if shape not in op.graph.constants:
        return False
    buffer, dims = op.graph.constants[shape]
    value = op.graph._buffers[buffer].data.reshape(dims)
    return value.ndim == 1 and len(value) == 2 and int(value[1]) == -1


class _Channels:
    """Union-find over channels: element (tensor, c) is channel c (axis 1) of a traced tensor. Each root
    carries whether its channels must stay and the AND of the pruned flags of the dense layers writing it."""

    def __init__(self):
        self.base, self.parent, self.fixed, self.pruned = {}, [], [], []

    def ids(self, t):
        """The element indices of t's channels (None for a tensor without a channel axis)."""
        width = _width(t)
        if width is None:
            return None
        if id(t) not in self.base:
            self.base[id(t)] = (len(self.parent), t)        # t is kept alive with its index
            self.parent.extend(range(len(self.parent), len(self.parent) + width))
            self.fixed.extend([False] * width)
            self.pruned.extend([None] * width)
        start = self.base[id(t)][0]
        return np.arange(start, start + width)

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b):
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra != rb:
            self.parent[rb] = ra
            self.fixed[ra] = self.fixed[ra] or self.fixed[rb]
            self.pruned[ra] = _and(self.pruned[ra], self.pruned[rb])

    def union_all(self, xs, ys, where):
        if xs is None or ys is None or len(xs) != len(ys):
            raise ValueError(f"cannot shrink: {where} ties tensors of {None if xs is None else len(xs)} and "
                             f"{None if ys is None else len(ys)} channels")
        for a, b in zip(xs, ys):
            self.union(a, b)

    def fix(self, t):
        for i in self.ids(t) if self.ids(t) is not None else []:
            self.fixed[self.find(int(i))] = True

    def source(self, t, pruned):
        for i, p in zip(self.ids(t), pruned):
            r = self.find(int(i))
            self.pruned[r] = _and(self.pruned[r], bool(p))

    def keep(self, t):
        """Boolean mask of the channels of t that stay."""
        ids = self.ids(t)
        if ids is None:
            return None
        roots = [self.find(int(i)) for i in ids]
        return np.array([self.fixed[r] or self.pruned[r] is not True for r in roots], bool)


def _and(a, b):
    return b if a is None else a if b is None else a and b


def _build_groups(calls, inputs, outputs):
    groups = _Channels()
    for t in inputs + outputs:
        groups.fix(t)
    first_call = {}
    for name, layer, ins, out in calls:
        where = f"layer {name!r} ({type(layer).__name__ if not isinstance(layer, _Operator) else layer.op_type})"
        kind = _kind(layer, ins, out)
        # A layer with weights called again (a detection head shared by pyramid levels) must keep the same
        # input and output channels on every call: its values are tied to those of its first call.
        if not isinstance(layer, _Operator) and layer._parameters:
            if id(layer) in first_call:
                for a, b in zip(first_call[id(layer)], ins + [out]):
                    if a is not None and b is not None and _width(a) == _width(b) is not None:
                        groups.union_all(groups.ids(a), groups.ids(b), f"{where} called again")
            else:
                first_call[id(layer)] = ins + [out]
        if kind == "dense" and _width(out) is not None:
            groups.ids(ins[0])
            groups.source(out, _pruned_outputs(layer))
        elif kind in ("per_channel", "add") and all(_width(t) == _width(out) is not None for t in ins):
            for t in ins:
                groups.union_all(groups.ids(out), groups.ids(t), where)
        elif kind == "concat" and _width(out) is not None and all(_width(t) is not None for t in ins) \
                and sum(_width(t) for t in ins) == _width(out):
            offset, out_ids = 0, groups.ids(out)
            for t in ins:
                groups.union_all(out_ids[offset:offset + _width(t)], groups.ids(t), where)
                offset += _width(t)
        elif kind == "flatten" and ins[0].ndim in (2, 4) and out.ndim == 2 and _width(ins[0]) is not None \
                and out.shape[0] == ins[0].shape[0]:
            spatial = int(np.prod(ins[0].shape[2:]))
            if _width(out) != _width(ins[0]) * spatial:
                for t in ins + [out]:
                    groups.fix(t)
                continue
            # the flattened feature c * spatial + s is channel c at position s
            features = groups.ids(out).reshape(-1, spatial)
            for channel, block in zip(groups.ids(ins[0]), features):
                for f in block:
                    groups.union(channel, f)
        else:
            for t in ins + ([out] if out is not None else []):
                groups.fix(t)
    changed = True
    while changed:                     # every dense layer keeps at least one output channel
        changed = False
        for _, layer, ins, out in calls:
            if _kind(layer, ins, out) == "dense" and _width(out) and not groups.keep(out).any():
                groups.fixed[groups.find(int(groups.ids(out)[0]))] = True
                changed = True
    return groups


def _pruned_outputs(module):
    """Output channels of a dense layer whose weight slice is all zero. Such a channel ignores its
    input: it is the constant bias[c] everywhere (0 without a bias), which `_removed_constants`
    carries on to the next dense layer."""
    w = module.weight.data.reshape(module.weight.shape[0], -1)
    return ~np.any(w != 0, axis=1)


def _slice_parameter(module, key, index, axis=0):
    value = module._parameters.get(key) if key in module._parameters else None
    if value is not None:
        module._parameters[key] = Parameter(np.ascontiguousarray(np.take(value.data, index, axis=axis)),
                                            requires_grad=value.requires_grad)


def _removed_constants(calls, groups):
    """{id(tensor): per-channel value of the removed channels (NaN where not uniform over space)}.

    A removed channel leaves its dense producer as its bias (zeros without one, or where the bias was
    pruned too); every per-channel layer or operator after it is run on an input filled with the channel's
    current constant (other channels zero) and the output read back, so BatchNorm, activations, pooling
    and depthwise convs are applied exactly as in forward; an add sums, a concat joins and a flatten
    repeats the values over the spatial positions."""
    constants = {}

    def uniform(array):
        flat = array.reshape(array.shape[0], array.shape[1], -1)[0]
        values = flat[:, 0].astype(np.float64)
        values[~np.all(flat == flat[:, :1], axis=1)] = np.nan
        return values

    for name, layer, ins, out in calls:
        kind = _kind(layer, ins, out)
        if kind == "dense":
            bias = layer.bias
            constants[id(out)] = np.zeros(out.shape[1]) if bias is None else bias.data.astype(np.float64)
        elif kind == "add" and all(id(t) in constants for t in ins):
            constants[id(out)] = sum(constants[id(t)] for t in ins)
        elif kind == "concat" and all(id(t) in constants for t in ins):
            constants[id(out)] = np.concatenate([constants[id(t)] for t in ins])
        elif kind == "flatten" and id(ins[0]) in constants and out.ndim == 2:
            spatial = int(np.prod(ins[0].shape[2:]))
            if out.shape[1] == ins[0].shape[1] * spatial:
                constants[id(out)] = np.repeat(constants[id(ins[0])], spatial)
        elif kind == "per_channel" and id(ins[0]) in constants:
            value = np.nan_to_num(constants[id(ins[0])], nan=0.0)
            shape = (1,) + tuple(ins[0].shape[1:])
            filled = np.broadcast_to(value.reshape((-1,) + (1,) * (len(shape) - 2)), shape).astype(np.float32)
            with no_grad():
                result = uniform(_as_tensor(layer(Tensor(np.ascontiguousarray(filled)))).data)
            result[np.isnan(constants[id(ins[0])])] = np.nan
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
        if isinstance(module, _Operator) or out is None or not inputs:
            continue
        if not (_is_dense(module) or _is_depthwise(module) or isinstance(module, (BatchNorm1d, BatchNorm2d))):
            continue
        if _width(out) is None or _width(inputs[0]) is None:
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

    Layers whose outputs meet at a residual add or a concat's consumer (directly or through per-channel
    layers) form one list: `shrink` removes a channel there only if every layer writing it has pruned it,
    so pruning them one by one removes fewer channels than asked. Give each list one shared channel
    ranking (for example `ln_structured(..., importance_scores=...)` from their summed channel norms) to
    remove what was asked. A layer whose channels must all stay (it writes the model's output, say) is in
    no list; every other Conv2d / Linear is in exactly one, in forward order. `example_input` as in `shrink`.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    example_input = _example_input(model, example_input)
    calls, inputs, outputs = _calls(_graph(model, example_input), example_input)
    groups = _build_groups(calls, inputs, outputs)
    lists, owner = [], {}
    for _, layer, ins, out in calls:
        if _kind(layer, ins, out) != "dense" or _width(out) is None:
            continue
        roots = {groups.find(int(i)) for i in groups.ids(out) if not groups.fixed[groups.find(int(i))]}
        if not roots:
            continue
        joined = [owner[r] for r in roots if r in owner]
        target = joined[0] if joined else len(lists)
        if not joined:
            lists.append([])
        for other in set(joined) - {target}:
            for m in lists[other]:
                if all(m is not k for k in lists[target]):
                    lists[target].append(m)
            lists[other] = []
            for r, o in list(owner.items()):
                if o == other:
                    owner[r] = target
        if all(layer is not k for k in lists[target]):
            lists[target].append(layer)
        for r in roots:
            owner[r] = target
    return [group for group in lists if group]


def shrink(model, example_input=None):
    """A copy of `model` with channel-pruned Conv2d / Linear layers cut down to dense layers of the
    channels that remain (see the module docstring for what is removed and how it is found).

    Pruning reparametrizations are made permanent in the copy first (`strip_pruning`); `model`
    itself is not modified.

    Args:
        model: a Module, typically after `ln_structured(..., n=2, dim=0)` on its convolutions, or a
            GraphModule (an imported ONNX model: its operator nodes are followed too).
        example_input: a Tensor the model accepts, to trace the forward; by default zeros of shape
            (1, *model.input_shape) when the model has that attribute, of the GraphModule's declared input
            shape, or of shape (1, in_channels, 8, 8) for a first Conv2d (the digits' size) or
            (1, in_features) for a first Linear.

    Returns:
        the shrunk copy (of the same class); in eval mode its outputs equal those of the masked model
        (see Exactness).

    Raises:
        ValueError: naming the layer, when the forward uses a tensor that no module produced.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    model = strip_pruning(copy.deepcopy(model))
    example_input = _example_input(model, example_input)
    graph = _graph(model, example_input)
    calls, inputs, outputs = _calls(graph, example_input)
    groups = _build_groups(calls, inputs, outputs)
    constants = _removed_constants(calls, groups)
    dropped = _apply(calls, groups, constants)
    output = outputs[0] if len(outputs) == 1 else None
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
