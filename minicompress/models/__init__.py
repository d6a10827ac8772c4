"""The two models of minicompress: the MobileNet-style classifier (the student, and the model
compressed throughout) and the wider teacher it is distilled from."""
from ..nn.mobilenet import MobileClassifier, create_mobile_classifier
from .teacher import TeacherClassifier, create_teacher_classifier
