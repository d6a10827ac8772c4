"""The UCI handwritten digits: 1,797 grey 8 x 8 images of the digits 0-9, bundled so that everything
that trains a model runs offline and in seconds.

Source: E. Alpaydin and C. Kaynak (1998), "Optical Recognition of Handwritten Digits", UCI Machine
Learning Repository, https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits
(the data set's test split, the copy scikit-learn ships). `digits.rst`, next to this module, describes
how the images were made and lists the references.

File format: `digits.csv.gz` holds one image per line, 64 comma-separated pixel counts in 0..16
(8 x 8, row-major) followed by the label.

    >>> images, labels = load_digits()
    >>> images.shape, images.dtype, labels.shape, labels.dtype
    ((1797, 1, 8, 8), dtype('float32'), (1797,), dtype('int64'))
"""
import gzip
from importlib import resources

import numpy as np

N_CLASSES = 10
PIXEL_MAX = 16


def load_digits():
    """images float32 (1797, 1, 8, 8) in [0, 1] (pixel counts / 16), labels int64 (1797,) in 0..9.

    Read from the package's own data file on every call (a few milliseconds); the arrays are the caller's.
    """
    with resources.files(__package__).joinpath("digits.csv.gz").open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    images = (table[:, :-1].astype(np.float32) / PIXEL_MAX).reshape(-1, 1, 8, 8)
    return images, table[:, -1].copy()


def input_preprocessing():
    """How a model trained on `load_digits` expects its input, as JSON data for a model file's metadata
    (`io.save(model, path, metadata={"input": input_preprocessing()})`), read back by `minicompress predict`:

        shape      [1, 8, 8]: one channel of 8 x 8 pixels per sample
        dtype      float32
        range      [0, 1]: the values the model was trained on
        raw_range  [0, 16]: the data set's pixel counts, before scaling
        scale      1/16: model input = pixel count * scale
    """
    return {"shape": [1, 8, 8], "dtype": "float32", "range": [0.0, 1.0], "raw_range": [0, PIXEL_MAX],
            "scale": 1.0 / PIXEL_MAX, "description": f"UCI digits: 8x8 pixel counts 0..{PIXEL_MAX} divided by {PIXEL_MAX}"}


def _validate_split(test_fraction, seed):
    """Raises TypeError / ValueError unless 0 < test_fraction < 1 (a real number) and seed is an int >= 0."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.integer, np.floating)):
        raise TypeError(f"test_fraction must be a float, got {type(test_fraction).__name__} {test_fraction!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def train_test_split_digits(test_fraction=0.2, seed=0):
    """A stratified, seeded split of the digits: (x_train, y_train, x_test, y_test).

    Each class c with n_c images puts round(test_fraction * n_c) of them, chosen at random, in the test
    set, so both sets keep the class proportions of the whole. Both sets are then shuffled, so that a
    loader reading them in order still sees mixed classes. The same seed gives the same split.

    Raises:
        TypeError: test_fraction is not a real number, or seed not an int.
        ValueError: test_fraction is not in (0, 1) or leaves one side empty; seed is negative.
    """
    _validate_split(test_fraction, seed)
    images, labels = load_digits()
    rng = np.random.default_rng(int(seed))
    train, test = [], []
    for label in range(N_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(float(test_fraction) * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"test_fraction {test_fraction!r} leaves {len(train)} training and {len(test)} test images; "
                         f"both must be non-empty")
    return images[train], labels[train], images[test], labels[test]
