"""Knowledge distillation: a small student learns from a large teacher's outputs (`losses`) and
intermediate features (`feature`); `trainer` has the training loop; `detection` distils detectors."""
from .feature import FeatureDistillation, FeatureDistillationOutput, capture_features
from .losses import (DistillationLosses, KnowledgeDistillation, distillation_loss, distillation_losses,
                     soft_target_loss)
from .trainer import train_with_distillation
from .detection import (DetectionDistillation, DetectionDistillationLosses, class_map_distillation,
                        train_detector_with_distillation)
