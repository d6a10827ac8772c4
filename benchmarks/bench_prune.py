"""Latency of pruned models and layers, minicompress against itself dense and against torch, in one run.

    python benchmarks/bench_prune.py            # print the tables
    python benchmarks/bench_prune.py --write    # also put them in benchmarks/RESULTS.md

1. The mobile classifier on 1x8x8 digits, batch 1 and 64 (eval mode): dense, and shrunk after 30% L2
   channel pruning of every non-depthwise conv as the pipeline does it (`pipeline.prune_model`:
   `ln_structured(n=2, dim=0)` with one ranking for convs a residual add ties, then `shrink`), beside
   torch's dense twin (tests/torch_twins.py). Ratios below 1: the left-hand side is faster.
   The layer tables end with the break-even sparsity, where the sparse layer starts to beat ours dense.
2. SparseLinear / SparseConv2d (CSR weights, `to_sparse`) against nn.Linear / nn.Conv2d with the same
   L1-pruned weights and torch's dense layers, across sparsities, timed interleaved
   (`bench_prune_sparse.interleaved_ms`) so machine load hits all contenders alike.
"""
import argparse
import platform
import re
import sys
from pathlib import Path

from timing import THREADS, median_seconds, print_table, set_threads  # first: it sets thread environment

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minicompress as mc  # noqa: E402
import minicompress.nn as nn  # noqa: E402
import minicompress.prune as P  # noqa: E402
from bench_prune_sparse import break_even, interleaved_ms  # noqa: E402
from minicompress.autograd import no_grad  # noqa: E402
from minicompress.pipelines.stages import prune_model  # noqa: E402
from minicompress.training import parameter_count  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_twins import MobileClassifier as TorchMobileClassifier  # noqa: E402
from torch_twins import load_into  # noqa: E402

HEADING = "## Pruning (bench_prune.py)"
COMMAND = "python benchmarks/bench_prune.py --write"
SPARSITIES = (0.5, 0.7, 0.9, 0.95)


def models():
    torch.manual_seed(0)
    twin = TorchMobileClassifier().eval()
    dense = load_into(nn.create_mobile_classifier(), twin).eval()
    pruned = load_into(nn.create_mobile_classifier(), twin)
    # the pipeline's structured pruning (one ranking for convs a residual add ties), without fine-tuning
    shrunk = prune_model(pruned, 0.3, structured=True, train_loader=None, finetune_epochs=0, lr=0.0).eval()
    return dense, shrunk, twin


def model_table():
    dense, shrunk, twin = models()
    rows = []
    for batch in (1, 64):
        x = np.random.default_rng(batch).random((batch, 1, 8, 8), dtype=np.float32)
        xm, xt = mc.tensor(x), torch.from_numpy(x)
        with no_grad(), torch.no_grad():
            np.testing.assert_allclose(dense(xm).data, twin(xt).numpy(), rtol=1e-3, atol=1e-4)
            times = {name: median_seconds(fn, repeat=30 if batch == 1 else 10) * 1e3 for name, fn in
                     (("dense", lambda: dense(xm)), ("shrunk", lambda: shrunk(xm)), ("torch", lambda: twin(xt)))}
        rows.append([batch, parameter_count(dense), parameter_count(shrunk), f"{times['dense']:.3f}",
                     f"{times['shrunk']:.3f}", f"{times['torch']:.3f}", f"{times['shrunk'] / times['dense']:.2f}x",
                     f"{times['dense'] / times['torch']:.2f}x"])
    headers = ["batch", "dense params", "shrunk params", "dense ms", "shrunk ms", "torch dense ms",
               "shrunk/dense", "dense/torch"]
    return "Mobile classifier, 30% L2 channel pruning as the pipeline does it + shrink", rows, headers


def layer_table(kind):
    rng = np.random.default_rng(0)
    if kind == "linear":
        layer, tlayer = nn.Linear(512, 512), torch.nn.Linear(512, 512)
        x = rng.standard_normal((64, 512)).astype(np.float32)
        title = "Linear 512 -> 512, batch 64"
    else:
        layer, tlayer = nn.Conv2d(32, 32, 3, padding=1), torch.nn.Conv2d(32, 32, 3, padding=1)
        x = rng.standard_normal((1, 32, 28, 28)).astype(np.float32)
        title = "Conv2d 32 -> 32, 3x3, padding 1, input 1x32x28x28"
    xm, xt = mc.tensor(x), torch.from_numpy(x)
    rows = []
    for s in SPARSITIES:
        dense = P.strip_pruning(P.l1_unstructured(_copy(layer), "weight", amount=s))
        sparse_layer = P.to_sparse(dense, min_sparsity=0.0)
        with torch.no_grad():
            tlayer.weight.copy_(torch.from_numpy(dense.weight.data))
            tlayer.bias.copy_(torch.from_numpy(dense.bias.data))
        with no_grad(), torch.no_grad():
            np.testing.assert_allclose(sparse_layer(xm).data, tlayer(xt).numpy(), rtol=1e-3, atol=1e-3)
            ms = interleaved_ms({"sparse": lambda: sparse_layer(xm), "dense": lambda: dense(xm),
                                 "torch": lambda: tlayer(xt)}, rounds=40)
        rows.append([s, sparse_layer.nnz, f"{ms['sparse']:.3f}", f"{ms['dense']:.3f}", f"{ms['torch']:.3f}",
                     f"{ms['sparse'] / ms['dense']:.2f}x", f"{ms['sparse'] / ms['torch']:.2f}x"])
    headers = ["sparsity", "nnz", "sparse ms", "dense ms", "torch dense ms", "sparse/dense", "sparse/torch"]
    ratios = [float(row[5].rstrip("x")) for row in rows]
    return title, rows, headers, f"break-even sparsity against our dense layer: {break_even(SPARSITIES, ratios)}"


def _copy(module):
    import copy
    return copy.deepcopy(module)


def markdown(title, rows, headers, note=None):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = [f"{title}:", "", "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines + (["", note] if note else []))


def write_results(tables):
    """Replace (or append) this script's section of RESULTS.md, leaving the other sections alone."""
    section = "\n\n".join([HEADING, f"`{COMMAND}` ({THREADS} threads, {platform.processor() or platform.machine()}, "
                           "median wall time; ratios below 1: the left-hand side is faster)"]
                          + [markdown(*t) for t in tables]) + "\n"
    path = Path(__file__).resolve().parent / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(HEADING) + r".*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(write=False):
    set_threads()
    tables = [model_table(), layer_table("linear"), layer_table("conv")]
    for title, rows, headers, *note in tables:
        print(f"\n{title}")
        print_table(rows, headers)
        print(*note)
    if write:
        write_results(tables)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put the tables in benchmarks/RESULTS.md")
    main(parser.parse_args(sys.argv[1:]).write)
