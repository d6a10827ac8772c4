"""Quantization, as `torch.ao.quantization`: int8 arithmetic, observers, fake quantization, eager-mode
static post-training quantization (fuse -> prepare -> calibrate -> convert), quantization-aware
training (fuse_modules_qat -> prepare_qat -> train -> convert) and dynamic quantization.

    dtypes, qparams, affine, histogram    the array-level arithmetic (torch's kernels bit for bit)
    (minicompress.qtensor)                QTensor and quantize_per_tensor / quantize_per_channel / dequantize
    observer, fake_quantize, qconfig      what records ranges and how a model is told which to use
    fuse, prepare, modules, qat           the module-level flow (the fused layer classes are in nn.fused)
    static                                calibrate and quantize_static (fuse -> prepare -> calibrate -> convert)
    quantize_fx                           the graph-mode flow (fuse_fx, prepare_fx, convert_fx) on GraphModules
    size                                  how many bytes a model needs, and the before / after comparison
    dynamic, dynamic_rnn                  dynamically quantized layers (weights int8 ahead of time, activations
                                          quantized on the fly)
    dynamic_per_token                     dynamic Linear with one input range per token (per_token=True)
    dynamic_quantize                      quantize_dynamic: which layers become dynamic ones, and the swap
    smoothquant                           SmoothQuant (Xiao et al. 2023): activation outliers moved into the
                                          weights by per-channel factors, then per-token int8
    dfq                                   data-free quantization (Nagel et al. 2019): cross-layer equalization,
                                          high-bias absorption, empirical and analytic bias correction
    adaround                              AdaRound (Nagel et al. 2020): learned up / down rounding of weights
                                          (`quant.adaround` is the function; its helpers import from the
                                          module: `from minicompress.quant.adaround import round_layer`)
    int4, gptq, weight_only               weight-only int4 in groups (onnxruntime's MatMulNBits layout),
                                          GPTQ rounding (Frantar et al. 2022), Int4Linear and
                                          quantize_int4_weights; Int4Conv2d and the int8 weight-only layers
    mixed_precision                       per-layer float32 / int8 / int4 weights from measured sensitivity,
                                          meeting a drop or bytes target (`from minicompress.quant import
                                          mixed_precision`)
"""
from . import dtypes, qparams
from .adaround import adaround
from .dfq import (absorb_high_bias, correct_bias, equalize, equalize_model, find_equalization_pairs,
                  fold_all_batch_norms)
from .dtypes import (per_channel_affine, per_channel_affine_float_qparams, per_channel_symmetric,
                     per_tensor_affine, per_tensor_symmetric, qint8, qint32, quint8)
from .fake_quantize import (FakeQuantize, default_fake_quant, default_per_channel_weight_fake_quant,
                            default_weight_fake_quant, disable_fake_quant, disable_observer, enable_fake_quant,
                            enable_observer, fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine)
from ..nn.fused import ConvBn2d, ConvBnReLU2d, ConvReLU2d, LinearReLU, fuse_conv_bn_eval, fuse_conv_bn_weights
from .fuse import find_fusable_patterns, fuse_mobile_classifier, fuse_modules, fuse_modules_qat
from .observer import (HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                       MovingAveragePerChannelMinMaxObserver, MSEObserver, PerChannelMinMaxObserver,
                       PerChannelMSEObserver, PlaceholderObserver)
from .prepare import (DEFAULT_QAT_MODULE_MAPPINGS, DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, convert, prepare,
                      prepare_qat, propagate_qconfig_)
from .qat import freeze_bn_stats, update_bn_stats
from .qconfig import (QConfig, default_dynamic_qconfig, default_per_channel_qconfig, default_qat_qconfig,
                      default_qconfig, full_range_dynamic_qconfig, get_default_qat_qconfig, get_default_qconfig,
                      per_channel_dynamic_qconfig)
from ..qtensor import QTensor, dequantize, quantize_per_channel, quantize_per_tensor
from .smoothquant import get_act_scales, smooth_lm, smooth_ln_fcs, smooth_quant
from .size import compare_quantization_methods, evaluate_quantization_impact, model_size_bytes
from .static import calibrate, quantize_static
from .weight_only import (Int4Conv2d, Int4Linear, Int8WeightOnlyConv2d, Int8WeightOnlyLinear,
                          quantize_int4_weights)
from ..nn.stubs import DeQuantStub, QuantStub


def fuse_fx(model, example_inputs=None):
    """`torch.ao.quantization.quantize_fx.fuse_fx`; defined in `minicompress.quant.quantize_fx`."""
    from .quantize_fx import fuse_fx as _fuse_fx
    return _fuse_fx(model, example_inputs)


def prepare_fx(model, qconfig_mapping, example_inputs=None):
    """`torch.ao.quantization.quantize_fx.prepare_fx`; defined in `minicompress.quant.quantize_fx`."""
    from .quantize_fx import prepare_fx as _prepare_fx
    return _prepare_fx(model, qconfig_mapping, example_inputs)


def convert_fx(prepared):
    """`torch.ao.quantization.quantize_fx.convert_fx`; defined in `minicompress.quant.quantize_fx`."""
    from .quantize_fx import convert_fx as _convert_fx
    return _convert_fx(prepared)


def quantize_dynamic(model, *args, **kwargs):
    """`torch.ao.quantization.quantize_dynamic(model, qconfig_spec=None, dtype=qint8, mapping=None,
    inplace=False)`; defined in `minicompress.quant.dynamic_quantize`, imported on first use."""
    from .dynamic_quantize import quantize_dynamic as _quantize_dynamic

    return _quantize_dynamic(model, *args, **kwargs)
