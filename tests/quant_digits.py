"""One digits classifier trained once per test session, shared by the quantization flow and QAT tests."""
import copy
import functools

import minicompress as mc
from minicompress import nn
from minicompress.training import accuracy, digits_loaders, fit

EPOCHS = 10


@functools.lru_cache(maxsize=None)
def _trained():
    mc.manual_seed(0)
    train_loader, test_loader = digits_loaders(batch_size=128, seed=0)
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=EPOCHS, lr=1e-2)
    model.eval()
    return model, train_loader, test_loader, accuracy(model, test_loader)


def trained_digits_classifier():
    """(a fresh copy of the trained float model, fresh train and test loaders, its test accuracy).

    Fresh loaders: a shuffling loader's order depends on how often it was iterated, and the calibration
    batches and QAT data order must not depend on which tests ran before."""
    model, _, _, float_accuracy = _trained()
    train_loader, test_loader = digits_loaders(batch_size=128, seed=0)
    return copy.deepcopy(model), train_loader, test_loader, float_accuracy
