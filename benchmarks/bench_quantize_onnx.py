"""`minicompress quantize` on ONNX exports of the torch twins, against onnxruntime's quantize_static.

    PYTHONPATH=. python benchmarks/bench_quantize_onnx.py

Exports the mobile classifier twin (tests/torch_twins.py, random BatchNorm statistics) and the Concat CNN of
tests/test_quantize_command.py with torch.onnx.export (BatchNormalization kept), writes 256 calibration
samples of digits-sized noise, and runs the command on each: it compares its QDQ file tensor by tensor with
onnxruntime's quantize_static (per channel, MinMax, the same batches) and prints output agreement with the
float model, file bytes and batch-1 latency for both files, timed in the same run with the same threads.
"""
import os
import sys

from timing import set_threads  # noqa: F401  (first: it sets the thread environment before torch)

import io  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_graph_fusion import randomized_twin  # noqa: E402
from test_quantize_command import ConcatCNN  # noqa: E402

from minicompress import cli  # noqa: E402


def export(net, path):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 1, 8, 8),), buffer, opset_version=17, dynamo=False,
                          input_names=["in0"], output_names=["out"], dynamic_axes={"in0": {0: "batch"}},
                          do_constant_folding=False)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def main():
    set_threads()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        calibration = os.path.join(work, "calibration.npy")
        np.save(calibration, np.random.default_rng(0).random((256, 1, 8, 8), dtype=np.float32))
        for name, net in (("mobile classifier", randomized_twin(0)), ("concat CNN", ConcatCNN())):
            path = os.path.join(work, "float.onnx")
            export(net, path)
            print(f"### {name}")
            cli.main(["quantize", path, "--calibration", calibration, "--out", os.path.join(work, "int8.onnx")])


if __name__ == "__main__":
    main()
