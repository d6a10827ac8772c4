"""mean_average_precision against pycocotools' COCOeval on the same data: hand-built cases (perfect,
none, duplicates, missed classes, images without objects, ties, boxes at a threshold) and
hypothesis-drawn scenes."""
import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.detect import mean_average_precision

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def _xywh(box):
    box = np.asarray(box, dtype=np.float64)
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def coco_oracle(preds, targets, iou_thresholds=None):
    """COCOeval's stats[0:3] on the data as COCO json; annotation ids start at 1 (pycocotools reads a
    match to id 0 as no match). Detections are built as `COCO.loadRes` builds them, without it, since
    it cannot take an empty list."""
    images = [{"id": i + 1} for i in range(len(targets))]
    labels = {int(c) for t in targets for c in np.asarray(t["labels"]).reshape(-1)}
    labels |= {int(c) for p in preds for c in np.asarray(p["labels"]).reshape(-1)}
    categories = [{"id": int(c)} for c in sorted(labels)]
    gts, dts = [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        for box, label in zip(np.asarray(t["boxes"]).reshape(-1, 4), np.asarray(t["labels"]).reshape(-1)):
            bb = _xywh(box)
            gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": int(label), "bbox": bb,
                        "area": bb[2] * bb[3], "iscrowd": 0})
        for box, score, label in zip(np.asarray(p["boxes"]).reshape(-1, 4), np.asarray(p["scores"]).reshape(-1),
                                     np.asarray(p["labels"]).reshape(-1)):
            bb = _xywh(box)
            dts.append({"id": len(dts) + 1, "image_id": i + 1, "category_id": int(label), "bbox": bb,
                        "area": bb[2] * bb[3], "iscrowd": 0, "score": float(score)})
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts, "categories": categories}
        gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": images, "annotations": dts, "categories": categories}
        dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": evaluator.stats[0], "map_50": evaluator.stats[1], "map_75": evaluator.stats[2]}


def assert_matches_coco(preds, targets, iou_thresholds=None):
    got = mean_average_precision(preds, targets, iou_thresholds)
    expected = coco_oracle(preds, targets, iou_thresholds)
    for key in ("map", "map_50", "map_75"):
        # The same float64 operations in another order (sums over classes): a few ulps.
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    return got


def image(boxes=(), labels=(), scores=None):
    d = {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64)}
    if scores is not None:
        d["scores"] = np.asarray(scores, dtype=np.float32)
    return d


TARGETS = [image([[10, 10, 30, 30], [40, 40, 60, 62]], [1, 2]), image([[5, 5, 20, 25]], [1]),
           image([[0, 0, 8, 8], [30, 0, 50, 20], [2, 40, 22, 60]], [3, 3, 2])]


def test_perfect_predictions_score_one():
    preds = [dict(t, scores=np.linspace(0.9, 0.5, len(t["labels"]))) for t in TARGETS]
    got = assert_matches_coco(preds, TARGETS)
    assert got["map"] == pytest.approx(1.0)


def test_no_predictions_score_zero():
    got = assert_matches_coco([image(scores=[]) for _ in TARGETS], TARGETS)
    assert got == {"map": 0.0, "map_50": 0.0, "map_75": 0.0}


def test_no_ground_truth_at_all_is_minus_one():
    preds = [image([[0, 0, 5, 5]], [1], [0.9]), image(scores=[])]
    got = assert_matches_coco(preds, [image(), image()])
    assert got["map"] == -1


def test_duplicates_count_as_false_positives():
    preds = [image([[10, 10, 30, 30], [11, 10, 30, 30], [40, 40, 60, 62]], [1, 1, 2], [0.9, 0.95, 0.8]),
             image([[5, 5, 20, 25], [5, 5, 20, 25]], [1, 1], [0.3, 0.3]),
             image([[0, 0, 8, 8], [30, 0, 50, 20]], [3, 3], [0.6, 0.6])]
    got = assert_matches_coco(preds, TARGETS)
    assert 0 < got["map"] < 1


def test_missed_classes_and_wrong_labels():
    preds = [image([[10, 10, 30, 30], [40, 40, 60, 62]], [1, 5], [0.9, 0.8]),  # class 2 missed, 5 spurious
             image([[5, 5, 20, 25]], [1], [0.7]), image([[0, 0, 8, 8]], [3], [0.4])]
    got = assert_matches_coco(preds, TARGETS)
    assert got["map_50"] < 1


def test_images_without_objects_and_false_positives_on_them():
    targets = TARGETS + [image(), image()]
    preds = [dict(t, scores=np.full(len(t["labels"]), 0.5)) for t in TARGETS]
    preds += [image([[0, 0, 10, 10]], [1], [0.99]), image(scores=[])]
    assert_matches_coco(preds, targets)


def test_boxes_exactly_at_the_threshold_and_ties_of_iou():
    # IoU exactly 0.5 and 0.75 with the first ground truth; two ground truths equally good for one detection.
    targets = [image([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 0, 0])]
    preds = [image([[0, 0, 10, 5], [20, 0, 30, 7.5], [45, 0, 55, 10]], [0, 0, 0], [0.9, 0.8, 0.7])]
    assert_matches_coco(preds, targets)
    targets = [image([[0, 0, 10, 10], [5, 0, 15, 10]], [0, 0])]
    assert_matches_coco([image([[2.5, 0, 12.5, 10]], [0], [0.9])], targets)


def test_more_than_one_hundred_detections_per_image_are_cut():
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 50, size=(150, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + 10], axis=1)
    targets = [image(boxes[:60], np.zeros(60))]
    preds = [image(boxes[::-1], np.zeros(150), rng.permutation(150) / 150)]
    assert_matches_coco(preds, targets)


def test_custom_iou_thresholds():
    preds = [image([[10, 12, 30, 30], [40, 40, 60, 60]], [1, 2], [0.9, 0.8])] + [image(scores=[])] * 2
    assert_matches_coco(preds, TARGETS, iou_thresholds=[0.5, 0.6])
    got = assert_matches_coco(preds, TARGETS, iou_thresholds=[0.3])
    assert got["map_50"] == -1 and got["map_75"] == -1


@st.composite
def scenes(draw):
    """A few images with ground truth on a 1/2 grid, and detections that are jittered copies of it,
    exact duplicates, or strays, with tied scores allowed."""
    n_images = draw(st.integers(1, 4))
    preds, targets = [], []
    coordinate = st.integers(0, 80).map(lambda v: v / 2)
    side = st.integers(0, 40).map(lambda v: v / 2)
    for _ in range(n_images):
        gt = [(x, y, x + w, y + h) for x, y, w, h in
              draw(st.lists(st.tuples(coordinate, coordinate, side, side), max_size=5))]
        gt_labels = draw(st.lists(st.integers(0, 2), min_size=len(gt), max_size=len(gt)))
        dets, labels = [], []
        for box, label in zip(gt, gt_labels):
            for _ in range(draw(st.integers(0, 2))):
                shift = draw(st.integers(-4, 4)) / 2
                dets.append((box[0] + shift, box[1], box[2] + shift, box[3]))
                labels.append(draw(st.sampled_from([label, label, (label + 1) % 3])))
        for x, y, w, h in draw(st.lists(st.tuples(coordinate, coordinate, side, side), max_size=3)):
            dets.append((x, y, x + w, y + h))
            labels.append(draw(st.integers(0, 2)))
        scores = draw(st.lists(st.integers(1, 8).map(lambda v: v / 8), min_size=len(dets), max_size=len(dets)))
        targets.append(image(gt, gt_labels))
        preds.append(image(dets, labels, scores))
    return preds, targets


@settings(max_examples=60)
@given(scenes())
def test_drawn_scenes_match_cocoeval(scene):
    assert_matches_coco(*scene)


@pytest.mark.parametrize("preds, targets, error, message", [
    ([image([[0, 0, 1, 1]], [0], [0.5])], [], ValueError, "same images: 1 preds, 0 targets"),
    ({}, [], TypeError, "preds must be a list"),
    ([{"boxes": np.zeros((0, 4)), "labels": []}], [image()], ValueError, r"preds\[0\] must be a dict with keys"),
    ([image([[0, 0, 1, 1]], [0], [0.5, 0.4])], [image()], ValueError, r"preds\[0\]\['scores'\].*one score per box"),
    ([image([[0, 0, 1, 1]], [0, 1], [0.5])], [image()], ValueError, r"preds\[0\]\['labels'\].*1 boxes but 2"),
    ([image(scores=[])], [{"boxes": [[0, 0, 1, 1, 1]], "labels": [0]}], ValueError, r"targets\[0\]\['boxes'\] must have shape"),
    ([image(scores=[])], [image([[3, 0, 1, 1]], [0])], ValueError, r"targets\[0\]\['boxes'\] must have x1 <= x2"),
    ([image([[0, 0, np.nan, 1]], [0], [0.5])], [image()], ValueError, r"preds\[0\]\['boxes'\] must not hold NaN"),
    ([image(scores=[])], [{"boxes": [[0, 0, 1, 1]], "labels": [0.5]}], ValueError, "integer"),
])
def test_bad_input_names_the_argument(preds, targets, error, message):
    with pytest.raises(error, match=message):
        mean_average_precision(preds, targets)


def test_bad_thresholds_are_rejected():
    with pytest.raises(ValueError, match=r"iou_thresholds must be a number in \[0, 1\]"):
        mean_average_precision([image(scores=[])], [image()], iou_thresholds=[0.5, 1.2])
