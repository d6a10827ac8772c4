"""Layers and models, mirroring `torch.nn`."""
from . import init
from .activation import (ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, LeakyReLU, MaxPool2d, ReLU, ReLU6, Sigmoid,
                         Softmax, Tanh)
from .attention import EfficientAttention, LinearAttention
from .bert import BertConfig, BertModel
from .containers import ModuleList, Sequential
from .layers import (Add, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Embedding, Flatten, Identity,
                     LayerNorm, Linear, SmoothedLinear)
from .loss import CrossEntropyLoss, KLDivLoss, MSELoss, NLLLoss
from .mobilenet import (DepthwiseSeparableConv2d, MobileClassifier, MobileNetBlock, create_mobile_classifier,
                        make_divisible)
from .module import Module, Parameter, RemovableHandle
from .rnn import GRU, LSTM, GRUCell, LSTMCell
from .upsample import Upsample, upsample_nearest
