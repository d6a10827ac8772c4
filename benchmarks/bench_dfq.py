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

    python benchmarks/bench_dfq.py --mobile224 [--imbalance 3] [--seeds 0 1 2] [--bits 8]

The same rows (AdaRound left out) on the 224x224 mobile classifier, `nn.create_mobile_classifier(1000, 3)`,
untrained, with the depthwise imbalance of trained MobileNets put in without changing its function
(`mobile224_model`), and the measure is the relative logit error mean ||q(x) - f(x)|| / ||f(x)|| on 16 held-out inputs, calibrated on
8 (standard normal 3 x 224 x 224).
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


def digits_model(seed, epochs):
    """The trained digits classifier, its 8 calibration batches and its measure (test accuracy)."""
    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=128, seed=seed)
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=epochs, lr=1e-2)
    model.eval()
    calibration = [x for x, _ in itertools.islice(train_loader, 8)]
    return model, calibration, lambda m: accuracy(m, test_loader), EXAMPLE


def random_batch_norms(model, rng):
    """`model` with every BatchNorm2d's affine and running statistics drawn (an untrained model whose
    activations still differ per channel, as a trained one's do)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.data = rng.uniform(0.5, 1.5, c).astype(np.float32)
            module.bias.data = rng.normal(0, 0.2, c).astype(np.float32)
            module.running_mean.data = rng.normal(0, 0.1, c).astype(np.float32)
            module.running_var.data = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return model


def mobile224_model(seed, decades=3.0):
    """The untrained 224x224 classifier with the depthwise imbalance of trained MobileNets, 8 calibration
    inputs, and its measure: the relative logit error to the float model on 16 held-out inputs.

    Each depthwise conv's batch norm is divided per channel by s_c, log-uniform over `decades`, and the
    pointwise conv after its ReLU multiplies input channel c by s_c: relu(z / s) s = relu(z), so the float
    model computes the same function, but after folding the depthwise channels' weight ranges span 10^decades
    (the per-tensor loss the DFQ paper starts from). decades=0 leaves the model balanced."""
    from minicompress.autograd import no_grad
    mc.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = random_batch_norms(nn.create_mobile_classifier(num_classes=1000, in_channels=3).eval(), rng)
    for block in model.blocks:
        conv = block.conv
        s = (10.0 ** rng.uniform(-decades / 2, decades / 2, conv.bn1.num_features)).astype(np.float32)
        conv.bn1.weight.data = conv.bn1.weight.data / s
        conv.bn1.bias.data = conv.bn1.bias.data / s
        conv.pointwise.weight.data = conv.pointwise.weight.data * s[None, :, None, None]
    calibration = [mc.tensor(rng.normal(0, 1, (2, 3, 224, 224)).astype(np.float32)) for _ in range(4)]
    held_out = mc.tensor(rng.normal(0, 1, (16, 3, 224, 224)).astype(np.float32))
    with no_grad():
        reference = model(held_out).numpy()

    def relative_logit_error(m):
        with no_grad():
            out = m(held_out).numpy()
        return float(np.mean(np.linalg.norm(out - reference, axis=1) / np.linalg.norm(reference, axis=1)))

    return model, calibration, relative_logit_error, np.zeros((1, 3, 224, 224), np.float32)


def run(model, calibration, measure, example, bits, adaround_iterations):
    """Every row of the tables for one model: {row name: measure}, and the channels HBA absorbed."""
    rows = {"float": measure(model)}
    per_tensor = qconfig(False, bits)

    def quantized(m, qc=per_tensor):
        return measure(Q.quantize_static(m, calibration, qconfig=qc))

    rows["per-channel"] = quantized(model, qconfig(True, bits))
    rows["per-tensor"] = quantized(model)
    corrected = copy.deepcopy(model)
    dfq.fold_all_batch_norms(corrected, example)
    dfq.correct_bias(corrected, per_tensor, data=calibration)
    rows["per-tensor + bias corr. (empirical), no CLE"] = quantized(corrected)
    cle = copy.deepcopy(model)
    stats = dfq.fold_all_batch_norms(cle, example)
    pairs = dfq.equalize(cle, example, stats)
    rows["per-tensor + CLE"] = quantized(cle)
    hba = copy.deepcopy(cle)
    absorbed = dfq.absorb_high_bias(hba, pairs, stats)
    rows["+ HBA"] = quantized(hba)
    empirical = copy.deepcopy(hba)
    dfq.correct_bias(empirical, per_tensor, data=calibration)
    rows["+ bias corr. (empirical)"] = quantized(empirical)
    analytic = copy.deepcopy(hba)
    dfq.correct_bias(analytic, per_tensor, stats=stats, example_inputs=example)
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
    parser.add_argument("--mobile224", action="store_true", help="the 224x224 classifier (relative logit error)")
    parser.add_argument("--imbalance", type=float, default=3.0, help="--mobile224: decades of depthwise spread")
    args = parser.parse_args()
    for bits in args.bits:
        if args.mobile224:
            results = [run(*mobile224_model(seed, args.imbalance), bits, 0) for seed in args.seeds]
            measure = "relative logit error (%)"
        else:
            results = [run(*digits_model(seed, args.epochs), bits, args.adaround_iterations) for seed in args.seeds]
            measure = "test accuracy (%)"
        names = list(results[0][0])
        label = "int8" if bits == 8 else f"w{bits}a8"
        print(f"\n{label} weights; {measure} per seed, mean; channels with absorbed bias per seed: "
              f"{[c for _, c in results]}")
        print("| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
        print("|---|" + "---|" * (len(args.seeds) + 1))
        for name in names:
            values = [100 * r[name] for r, _ in results]
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {np.mean(values):.2f} |")


if __name__ == "__main__":
    main()
