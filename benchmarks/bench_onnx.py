"""Import + run of CNNs exported from torch, against onnxruntime, on one thread.

    python benchmarks/bench_onnx.py [--repeat 10] [--profile] [--models digits,mobile,resnet] [--keep-freed-memory]

Each model is a torch twin in eval mode, exported with `torch.onnx.export(..., dynamo=False)` (which folds
BatchNorm into the convs), then loaded with `minicompress.onnx.load` and timed against onnxruntime (one
intra-op thread each) at the model's batch sizes:

    digits   the 8x8 digits classifier (tests/torch_twins.py MobileClassifier), batch 1 and 64
    mobile   the same architecture at 224x224 with 3 channels and 1000 classes, batch 1 and 8; also the native
             (non-graph) `nn.create_mobile_classifier` on the same weights, which runs the same kernels
    resnet   a ResNet-18-like CNN (`ResNet18` below: 7x7 stem, max pool, four stages of two basic blocks with
             dense 3x3 convs, 64-512 channels), 224x224, batch 1 and 8

onnx's ReferenceEvaluator (pure NumPy) is timed at batch 1 on the digits and mobile models as the slow
anchor. Prints a Markdown table per model; the ratio is minicompress / onnxruntime (below 1: minicompress
is faster). --profile prints the time per node type of the imported graph (summed over one call, median of
the calls; a fused Conv chain counts as its conv, split into depthwise, 1x1 and dense). --keep-freed-memory
makes glibc reuse freed memory instead of mapping large blocks afresh (`timing.keep_freed_memory`), as
onnxruntime's arena does: without it every 224x224 activation is page-faulted in again at each call.
"""
import os
import sys

os.environ["BENCH_THREADS"] = "1"
from timing import keep_freed_memory, median_seconds, node_profile, print_table, set_threads  # noqa: E402  (first: it sets thread environment)

import argparse  # noqa: E402
import io  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from torch import nn as tnn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from torch_twins import MobileClassifier  # noqa: E402

import minicompress as mc  # noqa: E402
import minicompress.onnx as mco  # noqa: E402


class BasicBlock(tnn.Module):
    """torchvision's ResNet BasicBlock: conv3x3-bn-relu-conv3x3-bn, plus the (projected) input, relu."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = tnn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(out_channels)
        self.conv2 = tnn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = tnn.Sequential(tnn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                             tnn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(tnn.Module):
    """torchvision.models.resnet18's layout (torchvision is not installed here)."""

    def __init__(self, num_classes=1000, widths=(64, 128, 256, 512)):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False), tnn.BatchNorm2d(widths[0]),
                                   tnn.ReLU(), tnn.MaxPool2d(3, 2, 1))
        layers, previous = [], widths[0]
        for i, width in enumerate(widths):
            layers += [BasicBlock(previous, width, 1 if i == 0 else 2), BasicBlock(width, width)]
            previous = width
        self.layers = tnn.Sequential(*layers)
        self.pool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(previous, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def randomize_batch_norm(model, seed):
    """Non-trivial running statistics and affine parameters, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, tnn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def export(model, shape):
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, *shape),), buffer, opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return buffer.getvalue()


def native_mobile(torch_model):
    """nn.create_mobile_classifier with the torch twin's weights (eval mode)."""
    ours = mc.nn.create_mobile_classifier(num_classes=1000, in_channels=3).eval()
    ours.load_state_dict({k: v.detach().numpy() for k, v in torch_model.state_dict().items()}, strict=False)
    return ours


def bench_model(title, torch_model, shape, batches, repeat, reference, native=None, profile=False):
    data = export(torch_model, shape)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    model = mco.load(data)
    rows = []
    t_import = median_seconds(lambda: mco.load(data), repeat=5, warmup=1)
    t_session = median_seconds(lambda: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]),
                               repeat=5, warmup=1)
    rows.append(["import (load / InferenceSession)", f"{t_import * 1e3:.2f}", f"{t_session * 1e3:.2f}",
                 f"{t_import / t_session:.2f}"])
    profiles = {}
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
        n = max(3, repeat // batch) if batch > 1 else repeat
        with mc.no_grad():
            ours = median_seconds(lambda: model(x), repeat=n)
            expected = session.run(None, {"x": x})[0]
            diff = float(np.abs(model(x).numpy() - expected).max())
            if profile:
                profiles[batch] = node_profile(model, x, n)
        theirs = median_seconds(lambda: session.run(None, {"x": x}), repeat=n)
        rows.append([f"forward batch {batch} (max |diff| {diff:.1e})", f"{ours * 1e3:.3f}", f"{theirs * 1e3:.3f}",
                     f"{ours / theirs:.2f}"])
        if native is not None:
            with mc.no_grad():
                xm = mc.tensor(x)
                t_native = median_seconds(lambda: native(xm), repeat=n)
                diff = float(np.abs(native(xm).numpy() - expected).max())
            rows.append([f"native model batch {batch} (max |diff| {diff:.1e})", f"{t_native * 1e3:.3f}",
                         f"{theirs * 1e3:.3f}", f"{t_native / theirs:.2f}"])
    if reference:
        x = np.zeros((1, *shape), np.float32)
        evaluator = ReferenceEvaluator(data)
        t_ref = median_seconds(lambda: evaluator.run(None, {"x": x}), repeat=3, warmup=1)
        with mc.no_grad():
            ours = median_seconds(lambda: model(x), repeat=repeat)
        rows.append(["ReferenceEvaluator batch 1 (its ms / ours)", f"{ours * 1e3:.3f}", f"{t_ref * 1e3:.3f}",
                     f"{ours / t_ref:.3f}"])
    print_table(rows, [f"{title}, 1 thread", "minicompress ms", "other ms", "ratio"])
    print()
    for batch, times in profiles.items():
        print(f"{title}, batch {batch}: ms per node kind, one call")
        print_table([[k, f"{v:.3f}"] for k, v in times.items()], ["node", "ms"])
        print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="calls timed at batch 1 (fewer at larger batches)")
    parser.add_argument("--profile", action="store_true", help="also print the time per node kind")
    parser.add_argument("--models", default="digits,mobile,resnet", help="comma-separated: digits, mobile, resnet")
    parser.add_argument("--keep-freed-memory", action="store_true", help="glibc keeps freed memory for reuse")
    args = parser.parse_args()
    if args.keep_freed_memory:
        print(f"glibc keeps freed memory: {keep_freed_memory()}")
    set_threads(1)
    models = args.models.split(",")
    torch.manual_seed(0)
    with torch.no_grad():
        if "digits" in models:
            bench_model("digits classifier 8x8", MobileClassifier().eval(), (1, 8, 8), (1, 64), 3 * args.repeat,
                        reference=True, profile=args.profile)
        if "mobile" in models:
            twin = randomize_batch_norm(MobileClassifier(num_classes=1000, in_channels=3), 1).eval()
            bench_model("mobile classifier 224x224", twin, (3, 224, 224), (1, 8), args.repeat, reference=True,
                        native=native_mobile(twin), profile=args.profile)
        if "resnet" in models:
            bench_model("ResNet-18-like 224x224", randomize_batch_norm(ResNet18(), 2).eval(), (3, 224, 224), (1, 8),
                        args.repeat, reference=False, profile=args.profile)


if __name__ == "__main__":
    main()
