"""Tutorial 2: int8 quantization, from one tensor to the whole digits classifier.

Run it:  python tutorials/02_quantization.py

1. The arithmetic on one tensor: scale, zero point, rounding error.
2. Static post-training quantization: fuse -> prepare -> calibrate -> convert.
3. Dynamic quantization of the Linear layers (weights int8 ahead of time, activations on the fly).
4. Quantization-aware training: a few epochs with fake quantization, starting from the float weights.
5. The size / accuracy table.

Every step mirrors torch.ao.quantization's eager mode; the tests compare each piece with torch.
"""
import copy

import numpy as np

import minicompress as mc
from minicompress import nn, quant
from minicompress.quant.static import calibrate
from minicompress.training import accuracy, digits_loaders, fit


def one_tensor():
    x = mc.tensor([-1.0, -0.3, 0.0, 0.25, 1.7, 3.0])
    observer = quant.MinMaxObserver()                       # quint8, per tensor, affine
    observer(x)
    scale, zero_point = observer.calculate_qparams()
    print(f"observed range [{observer.min_val.item():.2f}, {observer.max_val.item():.2f}] -> "
          f"scale = (max - min) / 255 = {scale[0]:.6f}, zero_point = {zero_point[0]}")
    q = quant.quantize_per_tensor(x, float(scale[0]), int(zero_point[0]), quant.quint8)
    print("int8 levels   ", q.int_repr().tolist())
    print("dequantized   ", [round(float(v), 4) for v in q.dequantize().numpy()])
    error = np.abs(q.dequantize().numpy() - x.numpy()).max()
    print(f"largest error {error:.5f} <= scale / 2 = {scale[0] / 2:.5f}\n")


def static_quantization(model, train_loader, calibration_batches):
    fused = quant.fuse_mobile_classifier(copy.deepcopy(model).eval())   # conv+bn+relu -> one layer, BN folded
    fused.qconfig = quant.get_default_qconfig("x86")                     # histogram activations, per-channel weights
    prepared = quant.prepare(fused)                                      # observers on every layer's output
    calibrate(prepared, [x for i, (x, _) in enumerate(train_loader) if i < calibration_batches])
    return quant.convert(prepared)                                       # integer layers


def dynamic_quantization(model):
    try:
        return quant.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=quant.qint8)
    except ImportError:
        print("dynamic quantization is not available in this build; skipping that row")
        return None


def quantization_aware_training(model, train_loader, epochs, lr):
    fused = quant.fuse_mobile_classifier(copy.deepcopy(model).train(), is_qat=True)   # BN kept, folded on the fly
    fused.qconfig = quant.get_default_qat_qconfig("x86")
    prepared = quant.prepare_qat(fused)                                  # fake-quantized weights and outputs
    fit(prepared, train_loader, epochs=max(epochs - 1, 0), lr=lr)
    prepared.apply(quant.freeze_bn_stats)                                # last epoch on running statistics
    fit(prepared, train_loader, epochs=1, lr=lr)
    prepared.apply(quant.disable_observer)
    return quant.convert(prepared.eval())


def main(epochs=10, qat_epochs=2, qat_lr=1e-4, calibration_batches=6, seed=0):
    one_tensor()

    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=128, seed=seed)
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=epochs, lr=1e-2)
    model.eval()

    rows = [("float32", model)]
    rows.append(("static int8", static_quantization(model, train_loader, calibration_batches)))
    dynamic = dynamic_quantization(model)
    if dynamic is not None:
        rows.append(("dynamic int8 (Linear)", dynamic))
    mc.manual_seed(seed)
    rows.append(("QAT int8", quantization_aware_training(model, train_loader, qat_epochs, qat_lr)))

    float_bytes = quant.model_size_bytes(model)
    results = {}
    print(f"{'model':<24}{'bytes':>8}{'ratio':>8}{'accuracy':>10}")
    for name, m in rows:
        size, acc = quant.model_size_bytes(m), accuracy(m, test_loader)
        results[name] = {"bytes": size, "accuracy": acc}
        print(f"{name:<24}{size:>8}{float_bytes / size:>8.2f}{acc:>10.4f}")
    return results


if __name__ == "__main__":
    main()
