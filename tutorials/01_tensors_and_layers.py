"""Tutorial 1: from a tensor to a trained MobileNet-style classifier.

Run it:  python tutorials/01_tensors_and_layers.py

Every number printed here can be checked against PyTorch: the tests do exactly that for each op.
"""
import numpy as np

import minicompress as mc
import minicompress.functional as F
from minicompress import nn
from minicompress.training import accuracy, digits_loaders, fit, parameter_count


def main(epochs=15, seed=0):
    # 1. A tensor is a NumPy array that remembers how it was made.
    x = mc.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()  # dy/dx = 2x
    print("x.grad =", x.grad.numpy().tolist())

    # 2. Broadcasting works as in NumPy; gradients are summed back to each input's shape.
    b = mc.tensor([10.0, 20.0], requires_grad=True)
    (x + b).sum().backward()
    print("b.grad =", b.grad.numpy().tolist(), "(each bias entry was used twice)")

    # 3. Layers are Modules with parameters; functional ops mirror torch.nn.functional.
    layer = nn.Linear(2, 3)
    out = F.relu(layer(x.detach()))
    print("Linear(2, 3) + ReLU ->", out.shape, "with", parameter_count(layer), "parameters")

    # 4. A depthwise separable convolution costs far less than a full one.
    full = nn.Conv2d(32, 64, 3, padding=1, bias=False)
    separable = nn.DepthwiseSeparableConv2d(32, 64)
    print(f"3x3 conv 32->64: {parameter_count(full)} weights; depthwise separable: "
          f"{parameter_count(separable)} (including batch norm)")

    # 5. Train the MobileNet-style classifier on the bundled 8x8 digits.
    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=64, seed=seed)
    model = nn.create_mobile_classifier(num_classes=10, in_channels=1)
    print(model)
    fit(model, train_loader, epochs=epochs, lr=1e-2, log=print)
    test_accuracy = accuracy(model, test_loader)
    size = sum(p.data.nbytes for p in model.parameters())
    print(f"test accuracy {test_accuracy:.4f}; {parameter_count(model)} parameters, {size} bytes as float32")
    return test_accuracy


if __name__ == "__main__":
    main()
