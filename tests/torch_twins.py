"""torch versions of minicompress's model architectures, with the same module names, so that a
state_dict moves between the two unchanged."""
import torch
from torch import nn


class DepthwiseSeparableConv2d(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.pointwise(self.relu1(self.bn1(self.depthwise(x))))))


class MobileNetBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = DepthwiseSeparableConv2d(cin, cout, stride)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.conv(x)
        return out + x if self.use_residual else out


class MobileClassifier(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, channels=(16, 32, 64)):
        super().__init__()
        c1, c2, c3 = channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.blocks = nn.Sequential(MobileNetBlock(c1, c2), MobileNetBlock(c2, c2), MobileNetBlock(c2, c3, 2),
                                    MobileNetBlock(c3, c3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c3, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def load_into(mc_module, torch_module):
    """Copy a torch module's state_dict into a minicompress module (strict: keys must match)."""
    mc_module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()}, strict=True)
    return mc_module
