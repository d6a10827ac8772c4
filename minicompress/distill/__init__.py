"""Knowledge distillation: a small student learns from a large teacher's outputs (`losses`) and
intermediate features (`feature`); `trainer` has the training loop."""
from .feature import FeatureDistillation, FeatureDistillationOutput, capture_features
from .losses import (DistillationLosses, KnowledgeDistillation, distillation_loss, distillation_losses,
                     soft_target_loss)
from .trainer import train_with_distillation
