"""A readable listing of a GraphModule's nodes (`print(model.graph)`), in the spirit of torch.fx's
`Graph.print_tabular`: one line per node, `%outputs = target(%inputs) {attributes}  # the layer`."""
import numpy as np



def _attribute(value):
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}" if value.size > 8 else repr(value.tolist())
    return repr(value)


class Graph:
    """A view of a GraphModule's graph: `nodes`, `inputs`, `outputs`, and its listing as str()."""

    def __init__(self, module):
        self.module = module
        self.nodes = module.nodes
        self.inputs = module.inputs
        self.outputs = module.outputs

    def node(self, name):
        for node in self.nodes:
            if node["name"] == name:
                return node
        raise KeyError(f"no node named {name!r}")

    def __len__(self):
        return len(self.nodes)

    def __str__(self):
        args = ", ".join(f"%{s['name']}: {s.get('dtype') or '?'}{format_shape(s.get('shape'))}" for s in self.inputs)
        lines = [f"graph({args}):"]
        if self.module.constants:
            lines.append(f"  # {len(self.module.constants)} constant(s) held as buffers")
        for node in self.nodes:
            outs = ", ".join(f"%{v}" for v in node["outputs"] if v) or "_"
            ins = ", ".join(f"%{v}" if v else "None" for v in node["inputs"])
            if node["kind"] == "module":
                layer = self.module.get_submodule(node["target"])
                text = f"{outs} = {node['target']}({ins})"
                note = f"{type(layer).__name__}({layer.extra_repr()}) from {node.get('op_type', '?')}"
            else:
                attrs = node.get("attrs", {})
                shown = ", ".join(f"{k}={_attribute(v)}" for k, v in attrs.items())
                domain = f"{node['domain']}." if node.get("domain") else ""
                text = f"{outs} = {domain}{node['op_type']}({ins})" + (f" {{{shown}}}" if shown else "")
                note = f"{node['name']}, opset {node['version']}"
            lines.append(f"  {text:<64}  # {note}")
        lines.append("  return " + ", ".join(f"%{v}" for v in self.outputs))
        return "\n".join(lines)

    __repr__ = __str__


def format_shape(shape):
    """A declared shape as the listing prints it: [1, 3, ?, ?] (None for a dynamic dimension)."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
