"""The small training and evaluation loops that tutorials, compression steps and the pipeline share.

    train_loader, test_loader = digits_loaders()
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=15)
    print(accuracy(model, test_loader))
"""
import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..data import DataLoader, TensorDataset, train_test_split_digits
from ..optim import Adam, CosineAnnealingLR


def digits_loaders(batch_size=64, test_fraction=0.2, seed=0):
    """(train_loader, test_loader) over the bundled digits: a seeded, stratified split."""
    x_train, y_train, x_test, y_test = train_test_split_digits(test_fraction=test_fraction, seed=seed)
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, seed=seed)
    test = DataLoader(TensorDataset(x_test, y_test), batch_size=256)
    return train, test


def _check_not_empty(loader, name="loader"):
    """A loader that knows its length and has none fails here, before any work; one that does not
    know it is checked once it has been iterated (no samples seen)."""
    try:
        n = len(loader)
    except TypeError:
        return
    if n == 0:
        raise ValueError(f"{name} is empty (len({name}) == 0); it must yield at least one batch")


def train_epoch(model, loader, optimizer, loss_fn=F.cross_entropy):
    """One pass over `loader`; returns (mean loss, accuracy) over the samples seen."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        optimizer.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.data.argmax(1) == y.data).sum())
        seen += len(y)
    if seen == 0:
        raise ValueError("loader yielded no samples; training needs at least one non-empty batch")
    return total_loss / seen, correct / seen


def fit(model, loader, epochs, optimizer=None, lr=1e-2, loss_fn=F.cross_entropy, log=None, cosine=True):
    """Train for `epochs` passes (Adam(lr) unless an optimizer is given), the learning rate annealed
    to zero over the run with a cosine schedule unless `cosine=False`; returns per-epoch history."""
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    _check_not_empty(loader)
    optimizer = optimizer or Adam(model.parameters(), lr=lr)
    schedule = CosineAnnealingLR(optimizer, T_max=epochs) if cosine and epochs else None
    history = []
    for epoch in range(epochs):
        loss, acc = train_epoch(model, loader, optimizer, loss_fn)
        if schedule is not None:
            schedule.step()
        history.append({"epoch": epoch + 1, "loss": loss, "accuracy": acc})
        if log is not None:
            log(f"epoch {epoch + 1:3d}  loss {loss:.4f}  train accuracy {acc:.4f}")
    return history


def predict(model, loader):
    """Concatenated logits of `model` over `loader` (eval mode, no graph)."""
    _check_not_empty(loader)
    model.eval()
    with no_grad():
        logits = [model(x).data for x, _ in loader]
    if not logits:
        raise ValueError("loader yielded no batches; predict needs at least one")
    return np.concatenate(logits)


def accuracy(model, loader):
    """Fraction of samples whose arg-max logit is the label."""
    _check_not_empty(loader)
    model.eval()
    correct = seen = 0
    with no_grad():
        for x, y in loader:
            correct += int((model(x).data.argmax(1) == y.data).sum())
            seen += len(y)
    if seen == 0:
        raise ValueError("loader yielded no samples; accuracy is undefined on none")
    return correct / seen


def parameter_count(model):
    """Trainable weights and biases; for quantized layers, their integer weights and float bias."""
    count = sum(p.data.size for p in model.parameters())
    for module in model.modules():
        weight = getattr(module, "_weight", None)
        if weight is not None and hasattr(weight, "int_repr"):
            count += int(np.prod(weight.shape))
            bias = getattr(module, "bias", None)
            count += 0 if bias is None or module._parameters.get("bias") is not None else np.asarray(bias).size
    return int(count)
