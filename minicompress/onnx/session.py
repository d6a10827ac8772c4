"""`InferenceSession`: onnxruntime's Python API over a loaded GraphModule, so that a script written for
onnxruntime runs here by changing its import:

    import minicompress.onnx as ort            # was: import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession("model.onnx", options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name        # .name, .shape (dynamic dims as strings / None), .type
    probs, = session.run(None, {name: x})      # a list of NumPy arrays, in the order asked for

The common subset of `onnxruntime.InferenceSession` (onnxruntime/python/onnxruntime_inference_collection.py):
`run(output_names, input_feed, run_options=None)`, `get_inputs()`, `get_outputs()`, `get_modelmeta()`,
`get_providers()`, `get_session_options()`; and `SessionOptions` with `intra_op_num_threads` (0: the
default, Numba's and OpenBLAS's thread counts as they are) and `add_session_config_entry`. What it does
differently:

- `run` checks the feed before any work, as onnxruntime does, and names the input in each error: an
  unknown or missing name, an element type other than the declared one (no silent cast: onnxruntime
  refuses float64 for a float input too), a rank or a fixed dimension that differs from the declaration.
  The errors are `InvalidArgument` (a ValueError; onnxruntime's own InvalidArgument derives from Exception,
  so code catching `Exception` catches both).
- `intra_op_num_threads = n` sets Numba's thread count (capped at NUMBA_NUM_THREADS) for the duration of
  each `run`, with OpenBLAS (the convolutions' GEMMs) on one thread, and restores both afterwards
  (`kernels.threads.thread_count` says why OpenBLAS stays at one). The other options (graph optimization
  level, inter-op threads, the execution mode, config entries) are accepted and recorded.
- `run` runs the model's compiled plan (`minicompress.compile`: constants folded, chains fused, values in a
  reused arena, generated source), compiled on the first run of each input signature and kept; the
  interpreted graph is `session.graph_module`.
- Only the CPU runs a graph here: `providers` may name others (onnxruntime warns and falls back to the
  CPU when one is not available); `get_providers()` is ["CPUExecutionProvider"].
- Results are arrays the caller owns: an output that is a graph input, a constant or a view of one is
  copied, as onnxruntime copies every output.
"""
from __future__ import annotations

import warnings
from contextlib import ExitStack

import numpy as np

from ..autograd import no_grad
from ..graph.compiler import CompiledModel
from ..graph.listing import format_shape
from ..kernels.threads import thread_count
from ..tensor import Tensor
from .importer import _onnx, load, read_model

CPU_PROVIDER = "CPUExecutionProvider"

# onnxruntime's spelling of each ONNX element type in NodeArg.type (TensorProto.DataType codes).
_TYPE_NAMES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
               9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64", 16: "bfloat16"}
_NUMPY_TYPE_NAMES = {"float32": "float", "float64": "double", "bool": "bool", "float16": "float16",
                     "uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16", "int32": "int32",
                     "int64": "int64", "uint32": "uint32", "uint64": "uint64"}


class InvalidArgument(ValueError):
    """A feed or an output name `InferenceSession.run` cannot take (onnxruntime raises its InvalidArgument)."""


def get_available_providers():
    return [CPU_PROVIDER]


def get_device():
    return "CPU"


class SessionOptions:
    """onnxruntime.SessionOptions' common fields. intra_op_num_threads: the threads of one run (0 = the
    process's current Numba / OpenBLAS settings); the rest are recorded for code that sets them."""

    def __init__(self):
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.graph_optimization_level = None
        self.execution_mode = None
        self.log_severity_level = 2
        self.enable_profiling = False
        self._config = {}

    def add_session_config_entry(self, key, value):
        """Record a config entry (onnxruntime's `session.intra_op.allow_spinning` etc.: no effect here,
        where idle threads never spin, `kernels/threads.py`)."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"add_session_config_entry takes two strings, got {key!r}, {value!r}")
        self._config[key] = value

    def get_session_config_entry(self, key):
        if key not in self._config:
            raise KeyError(f"no session config entry {key!r}")
        return self._config[key]


class RunOptions:
    """onnxruntime.RunOptions' fields, accepted by `run` and otherwise unused."""

    def __init__(self):
        self.log_severity_level = 2
        self.run_tag = ""
        self.terminate = False


class NodeArg:
    """An input or output of the graph as onnxruntime describes it: name, shape (an int per fixed
    dimension, the dim_param string of a named dynamic one, None for an unnamed one) and type
    ('tensor(float)', ...)."""

    def __init__(self, name, shape, type):
        self.name, self.shape, self.type = name, shape, type

    def __repr__(self):
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


class ModelMetadata:
    """onnxruntime.ModelMetadata: the ModelProto's header fields and metadata_props."""

    def __init__(self, proto):
        self.producer_name = proto.producer_name
        self.graph_name = proto.graph.name
        self.domain = proto.domain
        self.description = proto.doc_string
        self.graph_description = proto.graph.doc_string
        self.version = proto.model_version
        self.custom_metadata_map = {p.key: p.value for p in proto.metadata_props}


def _node_arg(info, inferred):
    t = info.type.tensor_type
    if not info.type.HasField("tensor_type") and info.name in inferred:
        t = inferred[info.name].type.tensor_type
    shape = None
    if t.HasField("shape"):
        # a negative dim_value (some exporters write -1 for "any") is unknown, as onnxruntime reports it
        shape = [(d.dim_value if d.dim_value >= 0 else None) if d.HasField("dim_value") else (d.dim_param or None)
                 for d in t.shape.dim]
    elif t.elem_type:
        shape = []     # onnxruntime's shape of a tensor declared without dimensions
    type_name = _TYPE_NAMES.get(t.elem_type)
    return NodeArg(info.name, shape, f"tensor({type_name})" if type_name else "unknown")


def _type_of(array):
    name = _NUMPY_TYPE_NAMES.get(array.dtype.name)
    return f"tensor({name})" if name else f"numpy {array.dtype}"


def _check_providers(providers):
    for provider in providers or []:
        name = provider[0] if isinstance(provider, (tuple, list)) else provider
        if not isinstance(name, str):
            raise TypeError(f"providers must be names or (name, options) pairs, got {provider!r}")
        if name != CPU_PROVIDER:
            warnings.warn(f"minicompress runs graphs on the CPU only: provider {name!r} is not available, "
                          f"running on {CPU_PROVIDER}", RuntimeWarning, stacklevel=3)


class InferenceSession:
    """Run an ONNX model (a path, bytes or onnx.ModelProto) as onnxruntime.InferenceSession does.

    Args:
        path_or_bytes: the model file, its bytes, or a ModelProto.
        sess_options: a `SessionOptions` (onnxruntime's own is read too: its intra_op_num_threads applies).
        providers: execution providers; only the CPU is here (others warn and fall back, as onnxruntime).

    Raises:
        FileNotFoundError, TypeError: no file there / not a model source.
        UnsupportedOperatorError: an operator or opset minicompress does not implement (at construction).
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        threads = getattr(sess_options, "intra_op_num_threads", 0) if sess_options is not None else 0
        if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 0:
            raise ValueError(f"sess_options.intra_op_num_threads must be an integer >= 0 (0: the default), "
                             f"got {threads!r}")
        _check_providers(providers)
        self._sess_options = sess_options if sess_options is not None else SessionOptions()
        self._threads = int(threads)
        self._proto = read_model(path_or_bytes)
        self._model = load(self._proto).eval()       # (a negative dim_value is read as dynamic there)
        # the memory of the graph's constants: an output that is one, or views one, is copied by run()
        self._constant_roots = {id(_root(self._model._buffers[buffer].data))
                                for buffer, _ in self._model.constants.values()}
        graph = self._proto.graph
        initializers = {init.name for init in graph.initializer}
        inferred = {}
        if any(not o.type.HasField("tensor_type") for o in graph.output):
            try:
                inferred = {v.name: v for v in _onnx().shape_inference.infer_shapes(self._proto).graph.output}
            except Exception:  # noqa: BLE001  (shape inference is a help for the description, never required)
                inferred = {}
        self._inputs = [_node_arg(i, {}) for i in graph.input if i.name not in initializers]
        self._outputs = [_node_arg(o, inferred) for o in graph.output]
        self._initializers = initializers
        self._specs = {spec["name"]: spec for spec in self._model.inputs}
        self._compiled = None          # the CompiledModel, made on the first run

    @property
    def compiled(self):
        """The `graph.compiler.CompiledModel` `run` uses (its `plans`: one per input signature run so far),
        or None before the first run."""
        return self._compiled

    # ----- the description onnxruntime gives -----------------------------------------------------
    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def get_overridable_initializers(self):
        return []

    def get_modelmeta(self):
        return ModelMetadata(self._proto)

    def get_providers(self):
        return [CPU_PROVIDER]

    def get_provider_options(self):
        return {CPU_PROVIDER: {}}

    def get_session_options(self):
        return self._sess_options

    @property
    def graph_module(self):
        """The GraphModule the session runs (`minicompress.onnx.load` of the model)."""
        return self._model

    # ----- running -------------------------------------------------------------------------------
    def _feeds(self, input_feed):
        """The graph's inputs in call order, from `input_feed`, checked as onnxruntime checks them."""
        if not isinstance(input_feed, dict):
            raise TypeError(f"input_feed must be a dict {{input name: numpy array}}, got {type(input_feed).__name__}")
        names = [arg.name for arg in self._inputs]
        for name in input_feed:
            if name not in self._specs:
                if name in self._initializers:
                    raise InvalidArgument(f"input {name!r} is an initializer of the model; overriding initializers "
                                          f"is not supported (the inputs are {names})")
                raise InvalidArgument(f"invalid input name {name!r}: the model's inputs are {names}")
        missing = [name for name in names if name not in input_feed]
        if missing:
            raise InvalidArgument(f"required input(s) {missing} missing from the feed (given {list(input_feed)})")
        arrays = []
        for arg in self._inputs:
            value = input_feed[arg.name]
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            want = self._specs[arg.name].get("dtype")
            if want is not None and array.dtype != np.dtype(want):
                raise InvalidArgument(f"input {arg.name!r} must be {arg.type} (numpy {want}), got {_type_of(array)} "
                                      f"(numpy {array.dtype}); cast it first, e.g. x.astype(np.{want})")
            shape = self._specs[arg.name].get("shape")      # None: declared without dimensions, any shape
            if shape is not None:
                if array.ndim != len(shape):
                    raise InvalidArgument(f"input {arg.name!r} must have rank {len(shape)} (shape {format_shape(shape)}), "
                                          f"got shape {array.shape}")
                bad = [i for i, (d, n) in enumerate(zip(shape, array.shape)) if isinstance(d, int) and 0 <= d != n]
                if bad:
                    raise InvalidArgument(f"input {arg.name!r} must have shape {format_shape(shape)}, got {array.shape} "
                                          f"(dimension(s) {bad} differ)")
            arrays.append(array)
        return arrays

    def _output_names(self, output_names):
        known = [arg.name for arg in self._outputs]
        if output_names is None:
            return known
        if isinstance(output_names, str):
            raise TypeError(f"output_names must be a list of names or None, got the string {output_names!r}")
        output_names = list(output_names)
        unknown = [name for name in output_names if name not in known]
        if unknown:
            raise InvalidArgument(f"invalid output name(s) {unknown}: the model's outputs are {known}")
        return output_names

    def run(self, output_names, input_feed, run_options=None):
        """[numpy array] of the outputs named in `output_names` (None: every graph output, in the graph's
        order), computing the graph on `input_feed` ({input name: array})."""
        names = self._output_names(output_names)
        arrays = self._feeds(input_feed)
        arrays = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in arrays]
        with ExitStack() as stack:
            stack.enter_context(no_grad())
            stack.enter_context(thread_count(self._threads))
            if self._compiled is None:
                self._compiled = CompiledModel(self._model, arrays)
            results = self._compiled.plan_for(arrays)(*arrays)
        by_name = dict(zip(self._model.outputs, results))
        shared = self._constant_roots | {id(_root(a)) for a in arrays}
        return [_owned(by_name[name], shared) for name in names]


def _root(array):
    """The array whose memory `array` views (itself when it owns its memory)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _owned(value, shared):
    """The value's array, copied when it is, or is a view of, a graph input or a constant (whose roots'
    ids are in `shared`), or is not C-contiguous."""
    array = value.data if isinstance(value, Tensor) else np.asarray(value)
    if id(_root(array)) in shared or not array.flags.c_contiguous:
        return np.array(array, order="C")
    return array
