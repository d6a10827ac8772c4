"""Object detection: box operations (`boxes`), non-maximum suppression (`nms`) and COCO mean average
precision (`metrics`), with the names and conventions of torchvision.ops and torchmetrics."""
from .boxes import as_boxes, box_area, box_iou, decode_ltrb, encode_ltrb
from .metrics import COCO_IOU_THRESHOLDS, average_precision_table, mean_average_precision
from .nms import batched_nms, nms
