"""The models of minicompress: the MobileNet-style classifier (the student, and the model compressed
throughout), the wider teacher it is distilled from, and the pretrained sentence encoder (BERT + pooling)."""
from ..nn.mobilenet import MobileClassifier, create_mobile_classifier
from .teacher import TeacherClassifier, create_teacher_classifier
from .sentence_encoder import SentenceEncoder
