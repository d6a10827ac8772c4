"""The models of minicompress: the MobileNet-style classifier (the student, and the model compressed
throughout), the wider teacher it is distilled from, the FCOS detector and its teacher, and the
pretrained sentence encoder (BERT + pooling)."""
from ..nn.mobilenet import MobileClassifier, create_mobile_classifier
from .teacher import TeacherClassifier, create_teacher_classifier
from .detector import Detector, create_detector, create_teacher_detector, feature_locations
from .sentence_encoder import SentenceEncoder
