"""Quantization-aware training on the digits classifier: fuse_modules_qat -> prepare_qat -> a few epochs
from the float weights -> convert, compared with static post-training quantization of the same model."""

import minicompress as mc
from minicompress import nn, quant
from minicompress.quant import modules as nnq
from minicompress.quant import qat
from minicompress.training import accuracy, fit

from quant_digits import trained_digits_classifier

QAT_EPOCHS = 2
QAT_LR = 1e-4    # fine-tuning from trained weights: 1e-3 moved them too far in two epochs (accuracy fell)


def static_quantize(model, train_loader):
    fused = quant.fuse_mobile_classifier(model.eval())
    fused.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(fused)
    quant.static.calibrate(prepared, [x for i, (x, _) in enumerate(train_loader) if i < 6])
    return quant.convert(prepared)


def prepare_classifier_qat(model):
    fused = quant.fuse_mobile_classifier(model.train(), is_qat=True)
    fused.qconfig = quant.get_default_qat_qconfig("x86")
    return quant.prepare_qat(fused)


def test_prepare_qat_swaps_in_fake_quantized_layers():
    prepared = prepare_classifier_qat(nn.create_mobile_classifier())
    assert isinstance(prepared.stem[0], qat.ConvBnReLU2d)
    assert isinstance(prepared.blocks[0].conv.pointwise, qat.ConvBnReLU2d)
    assert isinstance(prepared.classifier, qat.Linear)
    assert isinstance(prepared.classifier.weight_fake_quant, quant.FakeQuantize)
    assert isinstance(prepared.stem[0].activation_post_process, quant.FakeQuantize)
    assert isinstance(prepared.quant.activation_post_process, quant.FakeQuantize)
    out = prepared(mc.randn(4, 1, 8, 8))
    assert out.shape == (4, 10)
    prepared.apply(quant.disable_observer)
    prepared.apply(quant.freeze_bn_stats)
    assert prepared.stem[0].freeze_bn and not prepared.stem[0].activation_post_process.observer_enabled.data[0]


def test_qat_is_at_least_as_accurate_as_static_quantization():
    """Fixed seeds (data order, initialisation): the comparison is one run, and QAT may tie static."""
    model, train_loader, test_loader, float_accuracy = trained_digits_classifier()
    static_accuracy = accuracy(static_quantize(model, train_loader), test_loader)

    mc.manual_seed(0)
    prepared = prepare_classifier_qat(model)
    fit(prepared, train_loader, epochs=QAT_EPOCHS - 1, lr=QAT_LR)
    prepared.apply(quant.freeze_bn_stats)        # the last epoch with BN frozen, as torch's QAT recipe
    fit(prepared, train_loader, epochs=1, lr=QAT_LR)
    prepared.apply(quant.disable_observer)
    quantized = quant.convert(prepared.eval())
    assert isinstance(quantized.stem[0], nnq.ConvReLU2d)
    qat_accuracy = accuracy(quantized, test_loader)
    print(f"float {float_accuracy:.4f}  static int8 {static_accuracy:.4f}  QAT int8 {qat_accuracy:.4f}")
    assert qat_accuracy >= static_accuracy
    assert quant.model_size_bytes(quantized) == quant.model_size_bytes(static_quantize(model, train_loader))
