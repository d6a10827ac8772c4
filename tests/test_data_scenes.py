"""The digit scenes: shapes, determinism, boxes that hold the ink, the overlap limit, and validation."""
import numpy as np
import pytest

from minicompress.data import load_digit_scenes
from minicompress.data.scenes import NOISE_SIGMA
from minicompress.detect import box_iou


@pytest.fixture(scope="module")
def scenes():
    return load_digit_scenes(60, image_size=48, max_objects=4, seed=3)


def test_shapes_dtypes_split_and_ranges(scenes):
    train, test = scenes
    assert train.images.shape == (48, 1, 48, 48) and test.images.shape == (12, 1, 48, 48)
    assert train.images.dtype == np.float32 and 0 <= train.images.min() and train.images.max() <= 1
    for part in (train, test):
        assert len(part.boxes) == len(part.labels) == len(part.images)
        for boxes, labels in zip(part.boxes, part.labels):
            assert boxes.dtype == np.float32 and labels.dtype == np.int64
            assert 1 <= len(labels) <= 4 and boxes.shape == (len(labels), 4)
            assert ((0 <= labels) & (labels <= 9)).all()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 48).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_same_arguments_same_arrays_and_other_seed_other_scenes(scenes):
    again = load_digit_scenes(60, image_size=48, max_objects=4, seed=3)
    for a, b in zip(scenes, again):
        np.testing.assert_array_equal(a.images, b.images)
        for x, y in zip(a.boxes + a.labels, b.boxes + b.labels):
            np.testing.assert_array_equal(x, y)
    other = load_digit_scenes(60, image_size=48, max_objects=4, seed=4)
    assert not np.array_equal(other[0].images, scenes[0].images)


def test_ink_lies_inside_the_boxes_and_boxes_respect_the_overlap_limit(scenes):
    for part in scenes:
        for image, boxes in zip(part.images[:, 0], part.boxes):
            outside = np.ones(image.shape, dtype=bool)
            for x1, y1, x2, y2 in boxes.astype(int):
                outside[y1:y2, x1:x2] = False
                assert image[y1:y2, x1:x2].max() > 0.3       # each box holds a digit's ink
            # Outside every box only noise and the faint rim (< 0.1) of scaled digits: 0.1 + 6 sigma.
            assert image[outside].max() < 0.1 + 6 * NOISE_SIGMA
            iou = box_iou(boxes, boxes) - np.eye(len(boxes))
            assert iou.max() <= 0.2


def test_a_scene_holds_at_most_max_objects():
    train, test = load_digit_scenes(20, image_size=32, max_objects=1, seed=0)
    assert all(len(labels) == 1 for labels in train.labels + test.labels)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_images=1), "n_images must be an int >= 2"),
    (dict(n_images=10, image_size=8), "image_size must be an int >= 16"),
    (dict(n_images=10, max_objects=0), "max_objects must be an int >= 1"),
    (dict(n_images=10, seed=-1), "seed must be an int >= 0"),
    (dict(n_images=10, max_overlap=2.0), r"max_overlap must be a number in \[0, 1\]"),
    (dict(n_images=2, test_fraction=0.1), "leaves 2 training and 0 test scenes"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_digit_scenes(**kwargs)
