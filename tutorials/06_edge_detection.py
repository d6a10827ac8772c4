"""Tutorial 6: the edge-detection case study, end to end.

A detector small enough for a microcontroller-class CPU finds handwritten digits on a canvas. We
build the data (digits pasted on scenes), a MobileNet + FPN + FCOS student and a wider teacher,
distil the student from the teacher (class-map KD weighted by the teacher's confidence), prune
20% of its weights by magnitude, quantize it to int8, and compare every stage in COCO mAP, bytes
and latency. The whole job, with channel pruning and dynamic int8 as well, is `minicompress
optimize --task detect`.

    python tutorials/06_edge_detection.py
"""
import numpy as np

import minicompress as mc
from minicompress.data import digit_scene_sampler, load_digit_scenes
from minicompress.cli.detect import DETECT_BATCH_SIZE, DETECT_DISTILL, DETECT_LR, DETECT_TEACHER_EPOCHS
from minicompress.detect import box_iou, mean_average_precision, nms
from minicompress.pipelines.detect import optimize_detector
from minicompress.models import create_detector, create_teacher_detector


def main(n_images=2000, image_size=48, epochs=20, teacher_epochs=DETECT_TEACHER_EPOCHS, finetune_epochs=2, seed=0, progress=True):
    mc.manual_seed(seed)

    # 1. The data: scenes of 1-3 digits with tight xyxy boxes; train and test use disjoint digit images.
    #    Training draws a fresh set of scenes (as many as the training split) from the training digits
    #    every epoch, so the detector cannot memorise placements; the test scenes stay fixed.
    train, test = load_digit_scenes(n_images, image_size=image_size, max_objects=3, seed=seed)
    draw = digit_scene_sampler(len(train.images), image_size=image_size, max_objects=3, seed=seed)
    print(f"{len(train.images)} training and {len(test.images)} test scenes of {image_size} x {image_size} pixels; "
          f"first scene: labels {train.labels[0].tolist()}, boxes {train.boxes[0].tolist()}")

    # 2. The box operations and the metric behave as torchvision and pycocotools do.
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    print("IoU of the first two boxes:", round(float(box_iou(boxes[:1], boxes[1:2])[0, 0]), 3),
          "| NMS at 0.5 keeps", nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist())
    perfect = [dict(t, scores=np.ones(len(t["labels"]))) for t in test.targets()]
    print("mAP of the ground truth itself:", round(mean_average_precision(perfect, test.targets())["map"], 4))

    # 3. The whole job: teacher, student alone, distilled student, 20% magnitude pruning, static int8.
    student = create_detector(image_size=image_size)
    teacher = create_teacher_detector(image_size=image_size)
    report = optimize_detector(student, teacher, train, test, prune=0.2, quantize="static", epochs=epochs,
                               teacher_epochs=teacher_epochs, finetune_epochs=finetune_epochs, lr=DETECT_LR,
                               batch_size=DETECT_BATCH_SIZE,
                               distill=DETECT_DISTILL, progress=progress, seed=seed, resample=draw)
    print()
    print(report.to_markdown())
    return report


if __name__ == "__main__":
    main()
