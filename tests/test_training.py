"""minicompress.training and the DataLoader's arguments: empty loaders fail with a clear error naming
`loader` (never a ZeroDivisionError), and batch_size takes any integral number, as an index."""
import numpy as np
import pytest
import torch

from minicompress import nn
from minicompress.data import DataLoader, TensorDataset
from minicompress.training import accuracy, fit, predict


def _empty_loader(**kwargs):
    return DataLoader(TensorDataset(np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64)), **kwargs)


def _short_loader():
    """Three samples in batches of four with drop_last: no batch at all."""
    x = np.zeros((3, 1, 8, 8), np.float32)
    return DataLoader(TensorDataset(x, np.zeros(3, np.int64)), batch_size=4, drop_last=True)


class _Unsized:
    """An iterable with no len(): emptiness is found once it has been iterated."""

    def __iter__(self):
        return iter(())


@pytest.mark.parametrize("loader", [_empty_loader(), _short_loader(), _Unsized(), []],
                         ids=["empty dataset", "drop_last", "unsized", "list"])
@pytest.mark.parametrize("run", [lambda m, l: fit(m, l, 1), accuracy, predict], ids=["fit", "accuracy", "predict"])
def test_empty_loader_raises_value_error_naming_loader(run, loader):
    model = nn.create_mobile_classifier(10, 1)
    with pytest.raises(ValueError, match="loader"):
        run(model, loader)


@pytest.mark.parametrize("batch_size", [np.int64(4), np.int32(4), np.uint8(4), 4])
def test_batch_size_accepts_any_integer_type(batch_size):
    """Any integral number per operator.index (torch 2.13's own check wants a Python int and refuses
    NumPy integers; accepting them is the documented choice here)."""
    x = np.arange(10, dtype=np.float32)
    loader = DataLoader(TensorDataset(x), batch_size=batch_size)
    assert type(loader.batch_size) is int
    assert [len(b[0]) for b in loader] == [4, 4, 2] and len(loader) == 3


@pytest.mark.parametrize("batch_size", [True, False, 0, -1, 2.0, "2", np.bool_(True)])
def test_bad_batch_size_is_refused_as_torch(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        torch.utils.data.DataLoader(list(range(4)), batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(TensorDataset(np.zeros(4)), batch_size=batch_size)


@pytest.mark.parametrize("loader", [_empty_loader(), _short_loader(), _Unsized(), []],
                         ids=["empty dataset", "drop_last", "unsized", "list"])
def test_optimize_with_an_empty_test_loader_names_it_before_training(loader):
    from minicompress.pipelines.classify import optimize
    student, teacher = nn.create_mobile_classifier(10, 1), nn.create_mobile_classifier(10, 1)
    x = np.zeros((4, 1, 8, 8), np.float32)
    train = DataLoader(TensorDataset(x, np.zeros(4, np.int64)), batch_size=2)
    with pytest.raises(ValueError, match="test_loader"):
        optimize(student, teacher, train, loader, epochs=1, progress=False, log=None)
