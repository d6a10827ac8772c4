"""Knowledge distillation against torch: the loss (value and gradients), the teacher staying frozen,
feature distillation (adapters, hooks, the MSE of torch-computed features), the teacher model, and
a short distillation run on the digits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn as tnn

import minicompress as mc
from harness import check_op
from minicompress import nn
from minicompress.data import DataLoader, TensorDataset, train_test_split_digits
from minicompress.distill import (FeatureDistillation, KnowledgeDistillation, capture_features, distillation_loss,
                                  distillation_losses, train_with_distillation)
from minicompress.models import create_mobile_classifier, create_teacher_classifier
from minicompress.optim import Adam
from strategies import arrays
from torch_twins import MobileClassifier as TorchMobileClassifier
from torch_twins import load_into


# ----- torch oracles ---------------------------------------------------------------------------

def torch_distillation_loss(s, t, y, temperature, alpha):
    distill = TF.kl_div(TF.log_softmax(s / temperature, dim=1), TF.softmax(t / temperature, dim=1),
                        reduction="batchmean") * temperature ** 2
    return distill if y is None else alpha * distill + (1 - alpha) * TF.cross_entropy(s, y)


def _torch_conv_bn_relu(cin, cout):
    return tnn.Sequential(tnn.Conv2d(cin, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU())


class TorchTeacher(tnn.Module):
    """torch twin of minicompress.models.TeacherClassifier (same module names)."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.stem = _torch_conv_bn_relu(in_channels, 64)
        self.layer1 = _torch_conv_bn_relu(64, 64)
        self.downsample = tnn.MaxPool2d(2)
        self.layer2 = tnn.Sequential(_torch_conv_bn_relu(64, 128), _torch_conv_bn_relu(128, 128))
        self.pool = tnn.AdaptiveAvgPool2d(1)
        self.classifier = tnn.Sequential(tnn.Linear(128, 256), tnn.ReLU(), tnn.Linear(256, num_classes))

    def forward(self, x):
        x = self.layer2(self.downsample(self.layer1(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def _randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, tnn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def twin_models(seed=0):
    """(torch teacher, torch student, minicompress teacher, minicompress student) with equal weights."""
    torch.manual_seed(seed)
    t_teacher, t_student = _randomize_bn(TorchTeacher(), seed), _randomize_bn(TorchMobileClassifier(), seed + 1)
    teacher = load_into(create_teacher_classifier(), t_teacher)
    student = load_into(create_mobile_classifier(), t_student)
    return t_teacher, t_student, teacher, student


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def no_hooks_left(*models):
    return all(not m._forward_hooks and not m._forward_pre_hooks for model in models for m in model.modules())


# ----- distillation_loss -----------------------------------------------------------------------

@st.composite
def logits_and_labels(draw, dtype):
    n, c = draw(st.integers(1, 6)), draw(st.integers(2, 8))
    s, t = draw(arrays((n, c), dtype, -6.0, 6.0)), draw(arrays((n, c), dtype, -6.0, 6.0))
    return s, t, draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))


@settings(max_examples=30, deadline=None)
@given(data=logits_and_labels(np.float64), temperature=st.floats(0.25, 10.0), alpha=st.floats(0.0, 1.0),
       with_labels=st.booleans())
def test_distillation_loss_value_and_gradients_equal_torch_float64(data, temperature, alpha, with_labels):
    s, t, y = data
    if with_labels:
        check_op(lambda s, t, y: distillation_loss(s, t, y, temperature, alpha),
                 lambda s, t, y: torch_distillation_loss(s, t, y, temperature, alpha), [s, t, y])
    else:
        check_op(lambda s, t: distillation_loss(s, t, None, temperature, alpha),
                 lambda s, t: torch_distillation_loss(s, t, None, temperature, alpha), [s, t])


@settings(max_examples=15, deadline=None)
@given(data=logits_and_labels(np.float32), temperature=st.floats(0.5, 8.0), alpha=st.floats(0.0, 1.0))
def test_distillation_loss_value_and_gradients_equal_torch_float32(data, temperature, alpha):
    s, t, y = data
    check_op(lambda s, t, y: distillation_loss(s, t, y, temperature, alpha),
             lambda s, t, y: torch_distillation_loss(s, t, y, temperature, alpha), [s, t, y])


def test_distillation_losses_parts_equal_torch():
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 2, 3])
    losses = distillation_losses(mc.tensor(s), mc.tensor(t), mc.tensor(y), temperature=2.0, alpha=0.25)
    ts, tt, ty = torch.from_numpy(s), torch.from_numpy(t), torch.from_numpy(y)
    np.testing.assert_allclose(losses.distillation.item(), torch_distillation_loss(ts, tt, None, 2.0, 0.25).item(),
                               rtol=1e-12)
    np.testing.assert_allclose(losses.student.item(), TF.cross_entropy(ts, ty).item(), rtol=1e-12)
    np.testing.assert_allclose(losses.total.item(), torch_distillation_loss(ts, tt, ty, 2.0, 0.25).item(),
                               rtol=1e-12)
    assert distillation_losses(mc.tensor(s), mc.tensor(t)).student is None


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(temperature=0.0), ValueError, "temperature must be a finite number > 0, got 0.0"),
    (dict(temperature=-2), ValueError, "temperature"),
    (dict(temperature=float("inf")), ValueError, "temperature"),
    (dict(alpha=1.5), ValueError, r"alpha must be a number in \[0, 1\], got 1.5"),
    (dict(alpha=-0.1), ValueError, "alpha"),
    (dict(teacher_logits=mc.zeros(4, 5)), ValueError, r"teacher_logits shape \(4, 5\) must equal"),
    (dict(student_logits=mc.zeros(4, 3, 1), teacher_logits=mc.zeros(4, 3, 1)), ValueError, "student_logits"),
    (dict(labels=mc.tensor([0, 1, 2])), ValueError, r"labels shape \(3,\)"),
    (dict(labels=mc.zeros(4)), TypeError, "labels must hold integer"),
    (dict(teacher_logits=np.zeros((4, 3))), TypeError, "teacher_logits must be a Tensor"),
])
def test_distillation_loss_rejects_bad_arguments(kwargs, error, match):
    args = dict(student_logits=mc.zeros(4, 3), teacher_logits=mc.zeros(4, 3), labels=mc.tensor([0, 1, 2, 0]))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        distillation_loss(**args)


# ----- KnowledgeDistillation -------------------------------------------------------------------

def test_knowledge_distillation_losses_and_student_gradients_equal_torch():
    t_teacher, t_student, teacher, student = twin_models()
    x, y = images(6), np.array([0, 1, 2, 3, 4, 5])
    kd = KnowledgeDistillation(teacher, student, temperature=4.0, alpha=0.6)
    total, distill, student_loss = kd(mc.tensor(x), mc.tensor(y))
    total.backward()
    t_teacher.eval()
    with torch.no_grad():
        teacher_logits = t_teacher(torch.from_numpy(x))
    expected = torch_distillation_loss(t_student(torch.from_numpy(x)), teacher_logits, torch.from_numpy(y), 4.0, 0.6)
    expected.backward()
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-4)
    np.testing.assert_allclose(distill.item() * 0.6 + student_loss.item() * 0.4, expected.item(), rtol=1e-4)
    torch_grads = dict(t_student.named_parameters())
    for name, p in student.named_parameters():
        np.testing.assert_allclose(p.grad.data, torch_grads[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_knowledge_distillation_leaves_the_teacher_untouched():
    mc.manual_seed(0)
    teacher, student = create_teacher_classifier(), create_mobile_classifier()
    teacher.train()
    before = {k: v.data.copy() for k, v in teacher.state_dict().items()}
    student_before = {k: v.data.copy() for k, v in student.state_dict().items()}
    kd = KnowledgeDistillation(teacher, student, temperature=3.0, alpha=0.7)
    assert {id(p) for p in kd.parameters()} == {id(p) for p in student.parameters()}
    assert all(not k.startswith("teacher") for k in kd.state_dict())
    optimizer = Adam(kd.parameters(), lr=1e-2)
    for seed in range(2):
        optimizer.zero_grad()
        kd(mc.tensor(images(8, seed)), mc.tensor(np.arange(8) % 10)).total.backward()
        optimizer.step()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():  # parameters and batch-norm running statistics
        assert np.array_equal(value.data, before[key]), key
    assert any(not np.array_equal(v.data, student_before[k]) for k, v in student.state_dict().items())
    assert all(p.grad is not None for p in student.parameters())


def test_knowledge_distillation_validates_its_arguments():
    teacher, student = create_teacher_classifier(), create_mobile_classifier()
    with pytest.raises(ValueError, match="temperature"):
        KnowledgeDistillation(teacher, student, temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        KnowledgeDistillation(teacher, student, alpha=2)
    with pytest.raises(TypeError, match="teacher must be a Module"):
        KnowledgeDistillation(lambda x: x, student)


# ----- FeatureDistillation ---------------------------------------------------------------------

PAIRS = [("layer1", "blocks.1"), ("layer2", "blocks.3"), ("classifier.0", "flatten")]


def test_feature_distillation_adapter_shapes_from_a_dry_run():
    teacher, student = create_teacher_classifier(), create_mobile_classifier()
    student.train()
    stats = {k: v.data.copy() for k, v in student.named_buffers()}
    fd = FeatureDistillation(teacher, student, PAIRS, sample_input=mc.tensor(images(3)))
    assert [type(a).__name__ for a in fd.adapters] == ["Conv2d", "Conv2d", "Linear"]
    assert [a.weight.shape for a in fd.adapters] == [(64, 32, 1, 1), (128, 64, 1, 1), (256, 64)]
    assert [a.bias.shape for a in fd.adapters] == [(64,), (128,), (256,)]
    assert all(m.training for m in student.modules())  # the dry run restored the mode ...
    assert all(np.array_equal(b.data, stats[k]) for k, b in student.named_buffers())  # ... and moved no statistic
    assert no_hooks_left(teacher, student)
    names = [n for n, _ in fd.named_parameters()]
    assert names[-6:] == ["adapters.0.weight", "adapters.0.bias", "adapters.1.weight", "adapters.1.bias",
                          "adapters.2.weight", "adapters.2.bias"]
    assert len(names) == len(list(student.parameters())) + 6 and not any(n.startswith("teacher") for n in names)


def test_feature_distillation_builds_adapters_lazily_and_accepts_a_dict():
    teacher, student = create_teacher_classifier(), create_mobile_classifier()
    fd = FeatureDistillation(teacher, student, {"layer2": "blocks.2"})
    assert len(fd.adapters) == 0
    fd(mc.tensor(images(2)))
    assert fd.pairs == [("layer2", "blocks.2")] and fd.adapters[0].weight.shape == (128, 64, 1, 1)


def test_feature_distillation_mse_and_gradients_equal_torch():
    t_teacher, t_student, teacher, student = twin_models(seed=3)
    x = images(5, seed=1)
    fd = FeatureDistillation(teacher, student, PAIRS, sample_input=mc.tensor(x))
    loss, student_logits, teacher_logits = fd(mc.tensor(x))
    loss.backward()
    assert no_hooks_left(teacher, student)

    features = {}
    def keep(key):
        def hook(module, args, output):
            features[key] = output
        return hook
    t_teacher.eval()
    for t_name, s_name in PAIRS:
        t_teacher.get_submodule(t_name).register_forward_hook(keep(("t", t_name)))
        if s_name != "flatten":  # the torch twin flattens with torch.flatten, not a module
            t_student.get_submodule(s_name).register_forward_hook(keep(("s", s_name)))
    t_student.pool.register_forward_hook(lambda m, a, out: features.__setitem__(("s", "flatten"), out.flatten(1)))
    with torch.no_grad():
        t_teacher_logits = t_teacher(torch.from_numpy(x))
    t_student_logits = t_student(torch.from_numpy(x))
    adapters = [{k: torch.tensor(v.data, requires_grad=True) for k, v in a.named_parameters()} for a in fd.adapters]
    expected = 0
    for (t_name, s_name), w in zip(PAIRS, adapters):
        feature = features[("s", s_name)]
        adapted = TF.conv2d(feature, w["weight"], w["bias"]) if feature.ndim == 4 else \
            TF.linear(feature, w["weight"], w["bias"])
        expected = expected + TF.mse_loss(adapted, features[("t", t_name)])
    expected.backward()

    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-4)
    np.testing.assert_allclose(student_logits.data, t_student_logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(teacher_logits.data, t_teacher_logits.numpy(), rtol=1e-4, atol=1e-5)
    for adapter, w in zip(fd.adapters, adapters):
        for name, p in adapter.named_parameters():
            np.testing.assert_allclose(p.grad.data, w[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    torch_grads = dict(t_student.named_parameters())
    for name, p in student.named_parameters():
        if name.startswith("classifier"):  # the feature loss does not reach the last layer
            assert p.grad is None or not p.grad.data.any()
            continue
        np.testing.assert_allclose(p.grad.data, torch_grads[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert all(p.grad is None for p in teacher.parameters())


def test_feature_distillation_rejects_mismatched_spatial_sizes_naming_the_pair_and_removes_its_hooks():
    teacher, student = create_teacher_classifier(), create_mobile_classifier()
    with pytest.raises(ValueError, match=r"pair \('layer1', 'blocks.3'\).*spatial sizes must be equal"):
        FeatureDistillation(teacher, student, [("layer1", "blocks.3")], sample_input=mc.tensor(images(2)))
    fd = FeatureDistillation(teacher, student, [("layer2", "stem")])
    with pytest.raises(ValueError, match=r"pair \('layer2', 'stem'\)"):
        fd(mc.tensor(images(2)))
    assert no_hooks_left(teacher, student)


@pytest.mark.parametrize("pairs, match", [
    ([("layer9", "blocks.1")], r"pair \('layer9', 'blocks.1'\): the teacher has no layer 'layer9'"),
    ([("layer1", "blocks.7")], r"the student has no layer 'blocks.7'"),
    ([], "at least one"),
    (["layer1"], r"each pair must be \(teacher_layer, student_layer\)"),
])
def test_feature_distillation_rejects_bad_pairs(pairs, match):
    with pytest.raises(ValueError, match=match):
        FeatureDistillation(create_teacher_classifier(), create_mobile_classifier(), pairs)


def test_capture_features_removes_its_hooks_on_an_exception():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with pytest.raises(RuntimeError):
        with capture_features(model, ["0", "1"]) as features:
            model(mc.ones(2, 3))
            assert set(features) == {"0", "1"} and features["1"].shape == (2, 4)
            raise RuntimeError
    assert no_hooks_left(model)


# ----- the teacher model -----------------------------------------------------------------------

def test_teacher_state_dict_keys_and_eval_output_equal_torch():
    t_teacher, _, teacher, _ = twin_models(seed=5)
    assert list(teacher.state_dict()) == list(t_teacher.state_dict())
    x = images(4)
    t_teacher.eval()
    teacher.eval()
    with torch.no_grad():
        expected = t_teacher(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(teacher(mc.tensor(x)).data, expected, rtol=1e-4, atol=1e-5)
    assert teacher(mc.tensor(x)).shape == (4, 10)


# ----- training --------------------------------------------------------------------------------

def _digits_loader(n=256, batch_size=64):
    x, y, _, _ = train_test_split_digits(seed=0)
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=True, seed=0)


def test_short_distillation_run_on_digits_lowers_the_student_loss():
    mc.manual_seed(0)
    loader = _digits_loader()
    teacher = create_teacher_classifier(width_mult=0.5)
    teacher_optimizer = Adam(teacher.parameters(), lr=1e-2)
    for _ in range(2):  # two short epochs: a teacher well above chance (about 75% on these samples)
        for x, y in loader:
            teacher_optimizer.zero_grad()
            mc.functional.cross_entropy(teacher(x), y).backward()
            teacher_optimizer.step()
    teacher_state = {k: v.data.copy() for k, v in teacher.state_dict().items()}
    student, lines = create_mobile_classifier(), []
    history = train_with_distillation(teacher, student, loader, epochs=3, temperature=4.0, alpha=0.7,
                                      optimizer=Adam(student.parameters(), lr=1e-2), progress=False, log=lines.append)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "total", "distillation", "student", "accuracy"}
    assert history[-1]["total"] < history[0]["total"]
    assert history[-1]["distillation"] < history[0]["distillation"]
    assert history[-1]["student"] < history[0]["student"]
    assert history[-1]["accuracy"] > history[0]["accuracy"]
    assert len(lines) == 3 and "distillation" in lines[0] and "accuracy" in lines[0]
    assert all(np.array_equal(v.data, teacher_state[k]) for k, v in teacher.state_dict().items())


def test_train_with_distillation_progress_bar_and_validation(capsys):
    loader = _digits_loader(n=16, batch_size=8)
    teacher, student = create_teacher_classifier(width_mult=0.25), create_mobile_classifier(width_mult=0.5)
    train_with_distillation(teacher, student, loader, epochs=1, progress=False, log=None)
    assert capsys.readouterr().err == ""
    train_with_distillation(teacher, student, loader, epochs=1, progress=True, log=None)
    assert "distill 1/1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        train_with_distillation(teacher, student, loader, epochs=0)
