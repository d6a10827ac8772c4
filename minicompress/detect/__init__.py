"""Object detection: box operations (`boxes`), non-maximum suppression (`nms`), COCO mean average
precision (`metrics`) with the names and conventions of torchvision.ops and torchmetrics; the FCOS
detector's losses (`losses`), targets and post-processing (`targets`) and training loop (`training`)."""
from .boxes import as_boxes, box_area, box_iou, decode_ltrb, encode_ltrb
from .losses import decode_outputs, fcos_loss, generalized_box_iou_loss, sigmoid_focal_loss
from .metrics import COCO_IOU_THRESHOLDS, average_precision_table, mean_average_precision
from .nms import batched_nms, nms
from .targets import fcos_targets, postprocess
from .training import (ResampledSceneLoader, detector_step, evaluate_detector, fit_detector, predict_detections,
                       resampled_scene_loader, scene_loader)
