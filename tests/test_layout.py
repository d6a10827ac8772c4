"""The package's layers, read from its own imports (ast, so lazy imports inside functions count too).

Each module belongs to a layer and imports only from its own layer or the layers below it; the only import
circles are the ones that are the design (the Tensor, its autograd and its ops; the graph's operator
registry and the op modules that register into it). The README's "What is inside" table gives the same map.
"""
import ast
import pathlib

import minicompress

PACKAGE = pathlib.Path(minicompress.__file__).parent

# Bottom first. A module's layer is the longest prefix of its dotted name listed here.
LAYERS = (
    ("kernels",),
    # The Tensor and its ops, QTensor, and quant's number formats (dtypes, qparams, affine, int4: NumPy
    # only), which QTensor, the graph's quantized operators and the kernels' twins stand on.
    ("tensor", "autograd", "ops", "random", "qtensor", "quant.dtypes", "quant.qparams", "quant.affine",
     "quant.int4"),
    ("functional",),
    ("nn", "optim", "data", "text", "safetensors"),
    ("training",),
    ("graph",),
    ("quant", "prune", "distill", "detect", "models"),
    ("onnx", "tflite", "io"),
    ("pipelines",),
    ("cli",),
)

# Top-level modules (not packages) the package may hold.
TOP_LEVEL_MODULES = {"__init__", "tensor", "qtensor", "autograd", "functional", "random", "io", "safetensors"}

# Import circles that are the design: name prefixes of their members.
ALLOWED_CIRCLES = (
    ("tensor", "autograd", "ops"),
    ("graph.registry", "graph.ops"),
)


def _modules():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name, path, modules):
    """The package modules that `name` imports (relative to the package: "quant.observer")."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    base = here if is_package else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "minicompress"]
            targets = [t.partition(".")[2] for t in targets]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "minicompress":
                module = node.module.partition(".")[2]
            else:
                continue
            # `from package import submodule` needs the submodule; `from module import name`, the module.
            targets = [f"{module}.{a.name}".strip(".") if f"{module}.{a.name}".strip(".") in modules else module
                       for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                out.add(target)
    return out


def _layer(name):
    best, level = "", None
    for index, members in enumerate(LAYERS):
        for prefix in members:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, index
    return level


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer():
    assert sorted(name for name in _modules() if name and _layer(name) is None) == []


def test_no_module_imports_from_a_layer_above_it():
    upward = sorted(f"{name} -> {target}" for name, targets in _graph().items() if name
                    for target in targets if target and _layer(target) > _layer(name))
    assert upward == []


def test_the_only_import_circles_are_the_designed_ones():
    graph = {name: {t for t in targets if t} for name, targets in _graph().items() if name}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    for root in graph:                                   # Tarjan's strongly connected components, iteratively
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    circles.append(sorted(members))

    def designed(members):
        return any(all(any(m == p or m.startswith(p + ".") for p in allowed) for m in members)
                   for allowed in ALLOWED_CIRCLES)

    assert [c for c in circles if not designed(c)] == []


def test_the_top_level_holds_only_the_core_modules():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert sorted(top - TOP_LEVEL_MODULES) == []
