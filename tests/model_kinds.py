"""One small model of every kind `io.save` accepts, with an input to run it on, for the model-file
tests: (name, builder) pairs; a builder returns (model, input array). Kept small so that building them
all and running each in a fresh process stays within a few seconds."""
import copy

import numpy as np

import minicompress as mc
from minicompress import nn
from minicompress import prune as P
from minicompress import quant as Q


def _images(n=4):
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)


def _classifier():
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1, width_mult=0.5)
    model.train()
    with mc.no_grad():
        model(mc.tensor(_images(8)))  # batch-norm statistics away from their defaults
    return model.eval()


def _calibrate(prepared, batches=2):
    with mc.no_grad():
        for k in range(batches):
            prepared(mc.tensor(np.random.default_rng(k + 1).random((8, 1, 8, 8), dtype=np.float32)))
    return prepared


def float_model():
    return _classifier(), _images()


def masked():
    model = _classifier()
    P.ln_structured(model.stem[0], "weight", amount=0.3, n=2, dim=0)
    P.l1_unstructured(model.classifier, "weight", amount=0.5)
    return model, _images()


def sparse():
    model = _classifier()
    # the pointwise convs and the classifier (a 3x3 SparseConv2d on the 1-channel stem gives the wrong
    # number of output channels: a to_sparse bug, outside what this file tests)
    targets = [(m, "weight") for m in model.modules()
               if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))]
    P.global_unstructured(targets, pruning_method=P.L1Unstructured, amount=0.6)
    P.strip_pruning(model)
    return P.to_sparse(model, min_sparsity=0.4), _images()


def static_int8():
    model = Q.fuse_mobile_classifier(_classifier(), inplace=True)
    model.qconfig = Q.get_default_qconfig("x86")
    return Q.convert(_calibrate(Q.prepare(model, inplace=True))), _images()


def folded_qdq():
    """static_int8 through ONNX (QDQ) and back onto integer layers: a GraphModule of quantized modules."""
    import minicompress.onnx as mco
    model, x = static_int8()
    return mco.fold_qdq(mco.load(mco.export(model, mc.tensor(x)))), x


def observed_histogram():
    """prepare()d and calibrated, not converted: HistogramObserver activations (x86 default qconfig)."""
    model = Q.fuse_mobile_classifier(_classifier(), inplace=True)
    model.qconfig = Q.get_default_qconfig("x86")
    return _calibrate(Q.prepare(model, inplace=True)), _images()


def observed_minmax():
    model = Q.fuse_mobile_classifier(_classifier(), inplace=True)
    model.qconfig = Q.default_qconfig
    return _calibrate(Q.prepare(model, inplace=True)), _images()


def qat_prepared():
    model = _classifier().train()
    model.qconfig = Q.get_default_qat_qconfig("x86")
    prepared = Q.prepare_qat(model)
    _calibrate(prepared)
    return prepared.eval(), _images()


def _sequence(batch=3, steps=5, features=6):
    return np.random.default_rng(0).standard_normal((steps, batch, features)).astype(np.float32)


def _dynamic(module):
    mc.manual_seed(0)
    return Q.quantize_dynamic(module)


def dynamic_linear():
    mc.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return Q.quantize_dynamic(model), np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)


def dynamic_lstm():
    mc.manual_seed(0)
    return _dynamic(nn.LSTM(6, 5, num_layers=2)), _sequence()


def dynamic_gru():
    mc.manual_seed(0)
    return _dynamic(nn.GRU(6, 5, bidirectional=True)), _sequence()


def dynamic_lstm_cell():
    mc.manual_seed(0)
    return _dynamic(nn.LSTMCell(6, 5)), _sequence()[0]


def dynamic_gru_cell():
    mc.manual_seed(0)
    return _dynamic(nn.GRUCell(6, 5)), _sequence()[0]


def traced_graph():
    from minicompress.graph import trace
    return trace(_classifier(), _images()), _images()


def _graph_prepared():
    from minicompress.quant.quantize_fx import prepare_fx
    prepared = prepare_fx(_classifier(), Q.get_default_qconfig("x86"), _images())
    with mc.no_grad():
        for k in range(2):
            prepared(np.random.default_rng(k + 1).random((8, 1, 8, 8), dtype=np.float32))
    return prepared


def graph_observed():
    return _graph_prepared(), _images()


def graph_int8():
    from minicompress.quant.quantize_fx import convert_fx
    return convert_fx(_graph_prepared()), _images()


def _scene_images(n=2, size=16):
    return np.random.default_rng(0).random((n, 1, size, size), dtype=np.float32)


def _detector():
    from minicompress.models import Detector

    mc.manual_seed(0)
    model = Detector(image_size=16, width_mult=0.5).train()
    with mc.no_grad():
        model(mc.tensor(_scene_images(4)))  # batch-norm statistics away from their defaults
    return model.eval()


def detector_channel_pruned():
    """The detection job's channel-pruned stage: L2 channel masks, shrunk (the shared head included)."""
    import warnings

    from minicompress.pipelines.stages import prune_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = prune_model(_detector(), 0.25, True, None, 0, 0.0)
    return model.eval(), _scene_images()


def detector_int8():
    """The detection job's int8 stage: shrunk, fused, calibrated, with QuantizedUpsample in the neck."""
    from minicompress.pipelines.detect import quantize_detector

    return quantize_detector(detector_channel_pruned()[0], _scene_images(8)), _scene_images()


def int4_weights():
    """Linear weights in int4 groups: GPTQ symmetric in groups of 16 (in_features 40: a padded last
    group), round-to-nearest asymmetric (packed zero points, an odd number of groups) in groups of 32."""
    from minicompress.quant.weight_only import Int4Linear
    mc.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    model = nn.Sequential(nn.Linear(40, 80), nn.ReLU(), nn.Linear(80, 3, bias=False))
    model = Q.quantize_int4_weights(model, group_size=16, method="gptq", calibrate=lambda m: m(mc.tensor(x)))
    model[2] = Int4Linear.from_float(nn.Linear(80, 3, bias=False), group_size=32, symmetric=False)
    return model, x


def mixed_precision():
    """The classifier with float32, int8 and int4 weights side by side (`quant.mixed_precision`): int4
    on the stem and the classifier (a Linear), int8 on a depthwise and a pointwise conv."""
    from minicompress.quant.mixed_precision import apply_precisions
    choice = {"stem.0": "int4", "blocks.0.conv.depthwise": "int8", "blocks.0.conv.pointwise": "int4",
              "blocks.1.conv.pointwise": "int8", "classifier": "int4"}
    return apply_precisions(_classifier(), choice), _images()


KINDS = {f.__name__: f for f in (float_model, masked, sparse, static_int8, folded_qdq, observed_histogram,
                                 observed_minmax, qat_prepared, dynamic_linear, dynamic_lstm, dynamic_gru,
                                 dynamic_lstm_cell, dynamic_gru_cell, traced_graph, graph_observed, graph_int8,
                                 detector_channel_pruned, detector_int8, int4_weights,
                                 mixed_precision)}


def outputs(model, x):
    """Every array a forward on `x` returns (tensors, quantized tensors, nested tuples), flattened."""
    with mc.no_grad():
        result = model(mc.tensor(x))
    flat, stack = [], [result]
    while stack:
        item = stack.pop(0)
        if isinstance(item, (tuple, list)):
            stack[:0] = list(item)
        elif hasattr(item, "dequantize"):
            flat.append(np.asarray(item.dequantize().data))
        else:
            flat.append(np.asarray(item.data))
    return flat


def observer_states(model):
    """The qparams every observer of `model` would give now (after the forward that `outputs` ran)."""
    states = []
    for name, module in model.named_modules():
        if hasattr(module, "calculate_qparams") and name.endswith("activation_post_process"):
            scale, zero_point = module.calculate_qparams()
            states += [np.asarray(scale), np.asarray(zero_point)]
    return states
