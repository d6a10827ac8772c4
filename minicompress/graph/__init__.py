"""Models as graphs: `GraphModule` (an interpreter over nodes that call operators or submodules) and the
operator registry keyed by (domain, op_type, since_version). `minicompress.onnx` builds graph modules from
ONNX files and writes them back; nothing here imports onnx."""
from .listing import Graph
from .module import GraphModule, sanitize
from .fusion import fuse
from .patterns import find_chains
from .registry import Op, UnsupportedOperatorError, lookup, register, resolve, supported_operators
from .trace import TraceError, trace

__all__ = ["Graph", "GraphModule", "find_chains", "fuse", "Op", "UnsupportedOperatorError", "lookup", "register", "resolve",
           "sanitize", "supported_operators", "TraceError", "trace"]
