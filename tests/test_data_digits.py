"""The bundled UCI digits: contents (against scikit-learn's copy when it is installed), the stratified
seeded split, and argument validation."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.data.digits import load_digits, train_test_split_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_shapes_dtypes_and_range(digits):
    images, labels = digits
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(images * 16, np.round(images * 16))   # pixel counts 0..16, divided by 16
    assert set(labels.tolist()) == set(range(10))


def test_same_images_and_class_counts_as_scikit_learn(digits):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    images, labels = digits
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(reference.target))
    np.testing.assert_array_equal(labels, reference.target)
    np.testing.assert_array_equal(images[:, 0] * 16, reference.images)


def test_every_call_returns_fresh_arrays():
    images, labels = load_digits()
    images[:] = -1
    labels[:] = -1
    again, again_labels = load_digits()
    assert again.min() == 0.0 and again_labels.min() == 0


def test_package_does_not_import_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from minicompress.data.digits import load_digits, train_test_split_digits\n"
            "train_test_split_digits()\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def _sorted_rows(images, labels):
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None].astype(np.float32)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


@settings(max_examples=10, deadline=None)
@given(test_fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1))
def test_split_is_a_stratified_partition(digits, test_fraction, seed):
    images, labels = digits
    x_train, y_train, x_test, y_test = train_test_split_digits(test_fraction, seed)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.shape[1:] == x_test.shape[1:] == (1, 8, 8)
    assert len(x_train) == len(y_train) and len(x_test) == len(y_test)
    # together the two sides are exactly the data set (as a multiset of (image, label) rows)
    np.testing.assert_array_equal(_sorted_rows(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])),
                                  _sorted_rows(images, labels))
    # every class is split in the requested proportion, up to rounding
    for label, total in enumerate(np.bincount(labels)):
        assert abs(np.sum(y_test == label) - test_fraction * total) <= 0.5 + 1e-9


def test_split_is_deterministic_and_depends_on_the_seed():
    first, second = train_test_split_digits(0.2, seed=3), train_test_split_digits(0.2, seed=3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = train_test_split_digits(0.2, seed=4)
    assert not np.array_equal(first[1], other[1])


def test_default_split_and_mixed_order():
    x_train, y_train, x_test, y_test = train_test_split_digits()
    assert len(y_test) == 359 and len(y_train) == 1438        # sum over classes of round(0.2 * n_c)
    assert len(np.unique(y_train[:50])) > 5                    # shuffled, not sorted by class


@pytest.mark.parametrize("test_fraction, error", [
    (0.0, ValueError), (1.0, ValueError), (-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError),
    (1e-4, ValueError), ("0.2", TypeError), (None, TypeError), (True, TypeError),
])
def test_bad_test_fraction_raises_naming_the_argument(test_fraction, error):
    with pytest.raises(error, match="test_fraction"):
        train_test_split_digits(test_fraction)


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (0.5, TypeError), ("0", TypeError)])
def test_bad_seed_raises_naming_the_argument(seed, error):
    with pytest.raises(error, match="seed"):
        train_test_split_digits(0.2, seed)
