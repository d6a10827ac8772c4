"""onnxruntime's calibrators reproduced (`minicompress quantize --method ...`): scales against onnxruntime's,
and what each method does to accuracy.

    PYTHONPATH=. python benchmarks/bench_quantize_calibrators.py [--skip-ppocr]

Two float models, each quantized by minicompress (`onnx.quantize_qdq`) and by onnxruntime's
`quantize_static(QDQ, per_channel, QUInt8 / QInt8)` with the same calibration batches, per method:

    digits CNN    a small torch CNN (conv-bn-relu, a residual block, average pool, linear) trained here on the
                  bundled digits for a few seconds and exported with BatchNormalization kept; calibrated on
                  128 training images in batches of 32, evaluated on the 360 test images
    PP-OCR cls    rapidocr-onnxruntime 1.4.4's text direction classifier (skipped when not installed);
                  calibrated on 16 random 48x192 images in batches of 8, evaluated on 32 others

For each method it prints the largest relative difference between our activation scales and onnxruntime's,
whether every zero point, int8 weight and int32 bias is identical, the accuracy (digits; labels) or top-1
agreement with the float model (PP-OCR), the cosine of the outputs to the float model's, and the time each
side took to calibrate and write the model (same run, same threads). Every model runs in onnxruntime.
"""
import argparse
import os
import sys
import time

from timing import set_threads  # noqa: F401  (first: it sets the thread environment before torch)

import io  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402

from minicompress.cli.onnx import _ort_session  # noqa: E402
from minicompress.cli.quantize import _ort_quantize_static, qdq_differences  # noqa: E402
from minicompress.data import train_test_split_digits  # noqa: E402
from minicompress.onnx import quantize_qdq  # noqa: E402

METHODS = [("minmax", {}), ("entropy", {}), ("entropy", {"num_bins": 512, "num_quantized_bins": 128}),
           ("percentile", {}), ("percentile", {"percentile": 99.9}), ("distribution", {})]


class DigitsCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.block = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16))
        self.head = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10))

    def forward(self, x):
        h = self.stem(x)
        return self.head(torch.relu(self.block(h) + h))


def digits_model(work):
    x_train, y_train, x_test, y_test = train_test_split_digits(0.2, 0)
    torch.manual_seed(0)
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(15):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[i:i + 64]), yt[i:i + 64]).backward()
            opt.step()
    net.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), buffer, opset_version=17, dynamo=False,
                          input_names=["in0"], output_names=["logits"], dynamic_axes={"in0": {0: "batch"}},
                          do_constant_folding=False)
    path = os.path.join(work, "digits.onnx")
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    calibration = [x_train[i:i + 32] for i in range(0, 128, 32)]
    return "digits CNN", path, "in0", calibration, x_test, y_test


def ppocr_model():
    import importlib.util
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx")
    rng = np.random.default_rng(0)
    images = rng.random((48, 3, 48, 192), dtype=np.float32) * 2 - 1
    return "PP-OCR cls", path, "x", [images[:8], images[8:16]], images[16:], None


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def evaluate(model_proto, input_name, x, threads):
    session = _ort_session(model_proto, threads)
    return np.concatenate([session.run(None, {input_name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-ppocr", action="store_true")
    args = parser.parse_args()
    set_threads()
    import numba
    threads = numba.get_num_threads()
    with tempfile.TemporaryDirectory() as work:
        cases = [digits_model(work)] + ([] if args.skip_ppocr else [ppocr_model()])
        for case in cases:
            if case is None:
                print("PP-OCR cls skipped: pip install --no-deps rapidocr-onnxruntime==1.4.4")
                continue
            name, path, input_name, calibration, x_eval, labels = case
            model = onnx.load(path)
            reference = evaluate(model, input_name, x_eval, threads)
            score = (lambda out: float(np.mean(out.argmax(1) == labels))) if labels is not None else \
                (lambda out: float(np.mean(out.argmax(1) == reference.argmax(1))))
            kind = "accuracy" if labels is not None else "top-1 agree"
            print(f"### {name}: float {kind} {score(reference):.4f}, {threads} thread(s)")
            print(f"| method | scales: max rel diff | zero points / int8 weights / int32 biases identical | "
                  f"{kind} ours / ort | cosine ours / ort | seconds ours / ort |")
            print("|---|---|---|---|---|---|")
            for method, options in METHODS:
                label = method + "".join(f" {k}={v}" for k, v in options.items())
                start = time.perf_counter()
                ours = quantize_qdq(model, calibration, method, **options)
                ours_s = time.perf_counter() - start
                start = time.perf_counter()
                theirs = onnx.load_from_string(_ort_quantize_static(path, input_name, calibration, method, options))
                theirs_s = time.perf_counter() - start
                d = qdq_differences(ours, theirs)
                same = (not (d["nodes_only_ours"] or d["nodes_only_theirs"]) and
                        d["zero_points_equal"] == d["activations"] and d["weights_identical"] == d["weights"]
                        and d["biases_identical"] == d["biases"])
                out_ours, out_theirs = evaluate(ours, input_name, x_eval, threads), \
                    evaluate(theirs, input_name, x_eval, threads)
                print(f"| {label} | {d['scale_rel_diff']:.2g} ({d['activations']} tensors) | "
                      f"{'yes' if same else 'NO'} ({d['zero_points_equal']}/{d['activations']}, "
                      f"{d['weights_identical']}/{d['weights']}, {d['biases_identical']}/{d['biases']}) | "
                      f"{score(out_ours):.4f} / {score(out_theirs):.4f} | "
                      f"{cosine(out_ours, reference):.6f} / {cosine(out_theirs, reference):.6f} | "
                      f"{ours_s:.2f} / {theirs_s:.2f} ({ours_s / theirs_s:.2f}x) |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
