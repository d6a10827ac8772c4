"""The operator registry: one class per operator and opset change, keyed by (domain, op_type, since_version).

As in onnx's reference evaluator, an operator whose semantics changed at some opset has one class per
version (`Softmax_1`, `Softmax_13`); a node of opset `v` runs the class with the largest
`since_version <= v`. Each class's `run(*inputs, **attributes)` takes NumPy arrays (None for an omitted
optional input) and returns one array or a tuple in the node's output order; the attributes are the ONNX
attribute names with the spec's defaults, so an attribute the implementation does not know is an error
when the graph is built, not a silently wrong answer.

    >>> @register("Relu", 6)
    ... class Relu(Op):
    ...     def run(self, x):
    ...         return np.maximum(x, 0)
"""
from __future__ import annotations

import inspect

DEFAULT_DOMAIN = ""
# onnx writes the default domain as "" or "ai.onnx"
_DOMAIN_ALIASES = {"ai.onnx": ""}

_REGISTRY: dict = {}  # (domain, op_type) -> {since_version: class}; filled once, at import of the op modules


class UnsupportedOperatorError(NotImplementedError):
    """An operator (or an opset of it, or an attribute of it) that minicompress does not implement."""


class Op:
    """Base class of operators; subclasses define `run(self, *inputs, **attributes)`."""

    domain = DEFAULT_DOMAIN
    op_type = None
    since_version = 1
    # How integer products are summed (graph/ops/quantized.py: ARITHMETICS). A node dict's "arithmetic" key,
    # written by minicompress.onnx.load, sets it on the instance that runs the node; other ops ignore it.
    arithmetic = "exact"
    uses_arithmetic = False     # True for the ops whose integer products depend on it

    def run(self, *inputs, **attributes):  # pragma: no cover - abstract
        raise NotImplementedError


def register(op_type, since_version, domain=DEFAULT_DOMAIN):
    """Class decorator adding an `Op` subclass to the registry."""
    def decorate(cls):
        cls.op_type, cls.since_version, cls.domain = op_type, since_version, domain
        _REGISTRY.setdefault((domain, op_type), {})[since_version] = cls
        return cls
    return decorate


def _load_ops():
    from . import ops  # noqa: F401  (the op modules register themselves)


def normalise_domain(domain):
    return _DOMAIN_ALIASES.get(domain or "", domain or "")


def resolve(domain, op_type, opset, node_name=""):
    """The class that runs `op_type` at `opset`: the largest since_version <= opset."""
    _load_ops()
    domain = normalise_domain(domain)
    versions = _REGISTRY.get((domain, op_type), {})
    usable = [v for v in versions if v <= opset]
    if not usable:
        where = f"domain {domain!r}, " if domain else ""
        raise UnsupportedOperatorError(
            f"operator {op_type!r} ({where}node {node_name!r}) is not supported at opset {opset}"
            + (f"; implemented from opset {min(versions)}" if versions else ""))
    return versions[max(usable)]


def lookup(domain, op_type, since_version):
    """The class registered exactly at (domain, op_type, since_version) (a node keeps the one it resolved)."""
    _load_ops()
    try:
        return _REGISTRY[(normalise_domain(domain), op_type)][since_version]
    except KeyError:
        raise UnsupportedOperatorError(f"operator {op_type!r} version {since_version} is not registered") from None


def check_attributes(cls, attributes, node_name, opset):
    """Raise UnsupportedOperatorError for an attribute that `cls.run` does not take."""
    params = inspect.signature(cls.run).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(attributes) - known)
    if unknown:
        raise UnsupportedOperatorError(f"operator {cls.op_type!r} (node {node_name!r}, opset {opset}): "
                                       f"attribute(s) {unknown} are not supported")


def supported_operators():
    """{(domain, op_type): sorted since_versions} of everything registered."""
    _load_ops()
    return {key: sorted(versions) for key, versions in sorted(_REGISTRY.items())}
