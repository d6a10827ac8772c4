"""Digit scenes: a small object-detection data set made offline from the bundled UCI digits.

Each scene is a grey `image_size` x `image_size` canvas holding 1 to `max_objects` digits. A digit is
scaled bilinearly from 8 x 8 to a side drawn from [image_size / 5, image_size * 3 / 8] pixels, placed at
a random position, and combined with the canvas by a pixel-wise maximum; its box is the tight
box of its scaled pixels above 0.1, in pixel coordinates (x1, y1, x2, y2) with x2, y2 exclusive, so a
pixel (i, j) with i in [y1, y2) and j in [x1, x2) is inside. A new digit is rejected and redrawn
(up to 50 times, then the scene holds fewer digits) if its box overlaps an earlier box with IoU above
`max_overlap` or covers more than half of it. Light Gaussian noise (sigma 0.03) is added and the
pixels clipped to [0, 1].

Train and test scenes are built from disjoint digit images: the digits are split first
(`train_test_split_digits`, stratified by class, same seed), so the test split measures detection of
digits never seen in training. The same arguments give the same arrays.

    >>> train, test = load_digit_scenes(500, seed=0)
    >>> train.images.shape, len(train.boxes), test.images.shape
    ((400, 1, 64, 64), 400, (100, 1, 64, 64))
    >>> train.boxes[0].shape == (len(train.labels[0]), 4)
    True

`digit_scene_sampler` draws fresh training scenes from the same training digits, a new set per
call (augmentation by placement, scale and company: a detector trained on a new draw every epoch
does not memorise the scenes); the test scenes stay the held-out ones of `load_digit_scenes`.

    >>> draw = digit_scene_sampler(400, seed=0)
    >>> draw(0).images.shape, (draw(1).images != draw(0).images).any()
    ((400, 1, 64, 64), True)
"""
from typing import List, NamedTuple

import numpy as np

from .digits import train_test_split_digits

NOISE_SIGMA = 0.03
INK_THRESHOLD = 0.1
PLACEMENT_TRIES = 50


class DigitScenes(NamedTuple):
    """images float32 (n, 1, S, S) in [0, 1]; boxes a list of n float32 (k_i, 4) xyxy arrays; labels a
    list of n int64 (k_i,) arrays of digit classes 0-9."""

    images: np.ndarray
    boxes: List[np.ndarray]
    labels: List[np.ndarray]

    def targets(self):
        """The ground truth in the format of `detect.mean_average_precision`."""
        return [{"boxes": b, "labels": c} for b, c in zip(self.boxes, self.labels)]


def _resize_matrix(out_size, in_size=8):
    """(out_size, in_size) bilinear interpolation weights, pixel centres aligned (align_corners=False)."""
    centres = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    centres = np.clip(centres, 0, in_size - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    frac = centres - low
    weights = np.zeros((out_size, in_size))
    weights[np.arange(out_size), low] += 1 - frac
    weights[np.arange(out_size), high] += frac
    return weights


def _pairwise_overlap(box, others):
    """IoU of `box` with each of `others`, and the fraction of each other box that `box` covers."""
    if not others:
        return np.zeros(0), np.zeros(0)
    others = np.asarray(others, dtype=np.float64)
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    other_area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + other_area - inter), inter / other_area


def _scene(rng, digits, labels, image_size, max_objects, max_overlap):
    canvas = np.zeros((image_size, image_size))
    boxes, classes = [], []
    low, high = max(4, image_size // 5), max(5, image_size * 3 // 8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(PLACEMENT_TRIES):
            index = int(rng.integers(len(digits)))
            side = int(rng.integers(low, high + 1))
            weights = _resize_matrix(side)
            patch = weights @ digits[index, 0].astype(np.float64) @ weights.T
            top, left = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
            rows, cols = np.flatnonzero((patch > INK_THRESHOLD).any(1)), np.flatnonzero((patch > INK_THRESHOLD).any(0))
            if len(rows) == 0:
                continue
            box = np.array([left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1], dtype=np.float64)
            iou, covered = _pairwise_overlap(box, boxes)
            if (iou <= max_overlap).all() and (covered <= 0.5).all():
                break
        else:
            continue
        region = canvas[top:top + side, left:left + side]
        np.maximum(region, patch, out=region)
        boxes.append(box)
        classes.append(int(labels[index]))
    canvas = np.clip(canvas + rng.normal(0.0, NOISE_SIGMA, canvas.shape), 0.0, 1.0)
    return canvas.astype(np.float32), np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def _build(n, rng, digits, labels, image_size, max_objects, max_overlap):
    scenes = [_scene(rng, digits, labels, image_size, max_objects, max_overlap) for _ in range(n)]
    images = np.stack([s[0] for s in scenes])[:, None] if scenes else np.zeros((0, 1, image_size, image_size), np.float32)
    return DigitScenes(images, [s[1] for s in scenes], [s[2] for s in scenes])


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def load_digit_scenes(n_images, image_size=64, max_objects=4, seed=0, test_fraction=0.2, max_overlap=0.2):
    """(train, test) `DigitScenes`: round(test_fraction * n_images) test scenes, the rest training.

    Args:
        n_images: total number of scenes, >= 2.
        image_size: canvas side in pixels, >= 16.
        max_objects: at most this many digits per scene (>= 1); each scene draws 1..max_objects.
        seed: seeds the digit split and every draw; the same arguments give the same arrays.
        test_fraction: in (0, 1), the share of test scenes (and of digit images kept for them).
        max_overlap: the largest IoU allowed between two digits' boxes, in [0, 1].

    Raises:
        ValueError: an argument outside the ranges above, or a split that leaves one side empty.
    """
    n_images = _check_int(n_images, "n_images", 2)
    image_size = _check_int(image_size, "image_size", 16)
    max_objects = _check_int(max_objects, "max_objects", 1)
    seed = _check_int(seed, "seed", 0)
    if isinstance(max_overlap, bool) or not isinstance(max_overlap, (int, float)) or not 0 <= max_overlap <= 1:
        raise ValueError(f"max_overlap must be a number in [0, 1], got {max_overlap!r}")
    x_train, y_train, x_test, y_test = train_test_split_digits(test_fraction=test_fraction, seed=seed)
    n_test = int(round(float(test_fraction) * n_images))
    if n_test == 0 or n_test == n_images:
        raise ValueError(f"test_fraction {test_fraction!r} of {n_images} scenes leaves {n_images - n_test} training "
                         f"and {n_test} test scenes; both must be non-empty")
    rng_train, rng_test = (np.random.default_rng([seed, part]) for part in (0, 1))
    train = _build(n_images - n_test, rng_train, x_train, y_train, image_size, max_objects, max_overlap)
    test = _build(n_test, rng_test, x_test, y_test, image_size, max_objects, max_overlap)
    return train, test


def digit_scene_sampler(n_images, image_size=64, max_objects=4, seed=0, test_fraction=0.2, max_overlap=0.2):
    """A function draw(k) -> `DigitScenes`: the k-th fresh set of `n_images` training scenes (k >= 0).

    Every draw uses only the training digits of `load_digit_scenes(..., seed=seed, test_fraction=...)`
    (so its test scenes stay held out) and its own generator, seeded (seed, 2 + k): the same k gives
    the same scenes, draws never repeat `load_digit_scenes`' own training scenes (generator (seed, 0)).
    Arguments as `load_digit_scenes`; n_images >= 1.
    """
    n_images = _check_int(n_images, "n_images", 1)
    image_size = _check_int(image_size, "image_size", 16)
    max_objects = _check_int(max_objects, "max_objects", 1)
    seed = _check_int(seed, "seed", 0)
    if isinstance(max_overlap, bool) or not isinstance(max_overlap, (int, float)) or not 0 <= max_overlap <= 1:
        raise ValueError(f"max_overlap must be a number in [0, 1], got {max_overlap!r}")
    x_train, y_train, _, _ = train_test_split_digits(test_fraction=test_fraction, seed=seed)

    def draw(k):
        k = _check_int(k, "k", 0)
        return _build(n_images, np.random.default_rng([seed, 2 + k]), x_train, y_train, image_size, max_objects,
                      max_overlap)

    return draw
