"""Quantization beyond round-to-nearest on the digits classifier: test accuracy of the float model, of
per-channel and per-tensor weights rounded to nearest, of per-tensor weights after cross-layer equalization
(CLE), + high-bias absorption (HBA), + bias correction (empirical on the calibration batches, or analytic
from the batch norms), and with 4-bit weights, of AdaRound (per channel and per tensor).

    python benchmarks/bench_dfq.py [--seeds 0 1 2] [--epochs 10] [--bits 8 4] [--adaround-iterations 500]

Each seed trains nn.create_mobile_classifier() as tests/quant_digits.py does (Adam, lr 1e-2, batch 128,
`epochs` epochs), then quantizes with `quantize_static` on 8 training batches (the same 1024 images for
calibration, bias correction and AdaRound). Weights: symmetric qint8 [-128, 127] with torch's x86 default
activations (HistogramObserver, 7-bit quint8: reduce_range) ("int8"), and a 4-bit grid [-7, 7] with 8-bit
activations (HistogramObserver, no reduce_range) ("w4a8"; the narrow range because convert saturates to
qint8, not to the observer's range).
"""
import argparse
import copy
import itertools

import numpy as np

import minicompress as mc
from minicompress import nn
from minicompress import quant as Q
from minicompress.quant import dfq
from minicompress.training import accuracy, digits_loaders, fit

EXAMPLE = np.zeros((1, 1, 8, 8), np.float32)


def qconfig(per_channel, bits):
    qmin, qmax = (None, None) if bits == 8 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    kind = Q.PerChannelMinMaxObserver if per_channel else Q.MinMaxObserver
    scheme = Q.per_channel_symmetric if per_channel else Q.per_tensor_symmetric
    return Q.QConfig(activation=Q.HistogramObserver.with_args(reduce_range=bits == 8),
                     weight=kind.with_args(dtype=Q.qint8, qscheme=scheme, quant_min=qmin, quant_max=qmax))


def run(seed, epochs, bits, adaround_iterations):
    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=128, seed=seed)
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=epochs, lr=1e-2)
    model.eval()
    calibration = [x for x, _ in itertools.islice(train_loader, 8)]
    rows = {"float": accuracy(model, test_loader)}
    per_tensor = qconfig(False, bits)

    def quantized(m, qc=per_tensor):
        return accuracy(Q.quantize_static(m, calibration, qconfig=qc), test_loader)

    rows["per-channel"] = quantized(model, qconfig(True, bits))
    rows["per-tensor"] = quantized(model)
    corrected = copy.deepcopy(model)
    dfq.fold_all_batch_norms(corrected, EXAMPLE)
    dfq.correct_bias(corrected, per_tensor, data=calibration)
    rows["per-tensor + bias corr. (empirical), no CLE"] = quantized(corrected)
    cle = copy.deepcopy(model)
    stats = dfq.fold_all_batch_norms(cle, EXAMPLE)
    pairs = dfq.equalize(cle, EXAMPLE, stats)
    rows["per-tensor + CLE"] = quantized(cle)
    hba = copy.deepcopy(cle)
    absorbed = dfq.absorb_high_bias(hba, pairs, stats)
    rows["+ HBA"] = quantized(hba)
    empirical = copy.deepcopy(hba)
    dfq.correct_bias(empirical, per_tensor, data=calibration)
    rows["+ bias corr. (empirical)"] = quantized(empirical)
    analytic = copy.deepcopy(hba)
    dfq.correct_bias(analytic, per_tensor, stats=stats, example_inputs=EXAMPLE)
    rows["+ bias corr. (analytic)"] = quantized(analytic)
    if bits < 8 and adaround_iterations:
        for name, qc in (("per-channel AdaRound", qconfig(True, bits)), ("per-tensor AdaRound", per_tensor)):
            rounded = Q.fuse_mobile_classifier(copy.deepcopy(model))
            Q.adaround(rounded, calibration, qc, iterations=adaround_iterations)
            rows[name] = quantized(rounded, qc)
    channels = sum(int((c > 0).sum()) for c in absorbed.values())
    return rows, channels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--adaround-iterations", type=int, default=500, help="per layer; 0 skips AdaRound")
    args = parser.parse_args()
    for bits in args.bits:
        results = [run(seed, args.epochs, bits, args.adaround_iterations) for seed in args.seeds]
        names = list(results[0][0])
        label = "int8" if bits == 8 else f"w{bits}a8"
        print(f"\n{label} weights; test accuracy (%) per seed, mean; channels with absorbed bias per seed: "
              f"{[c for _, c in results]}")
        print("| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
        print("|---|" + "---|" * (len(args.seeds) + 1))
        for name in names:
            values = [100 * r[name] for r, _ in results]
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {np.mean(values):.2f} |")


if __name__ == "__main__":
    main()
