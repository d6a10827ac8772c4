"""Tutorial 4: knowledge distillation - a small student learns from a large teacher.

Run it:  python tutorials/04_distillation.py

A trained classifier knows more than its arg-max: the probabilities it gives the wrong classes
say which digits look alike. Distillation (Hinton et al., 2015) trains a small student on those
"soft labels" as well as on the hard ones; feature distillation (Romero et al., 2015) also has it
imitate the teacher's intermediate activations.
"""
import numpy as np

import minicompress as mc
import minicompress.functional as F
from minicompress.distill import FeatureDistillation, distillation_loss, train_with_distillation
from minicompress.models import create_mobile_classifier, create_teacher_classifier
from minicompress.optim import Adam
from minicompress.training import accuracy, digits_loaders, fit, parameter_count


def show(probabilities):
    return "[" + " ".join(f"{p:.2f}" for p in probabilities) + "]"


def main(teacher_epochs=3, epochs=3, teacher_width=1.0, temperature=4.0, alpha=0.7, feature_weight=1.0, seed=0):
    # 1. Temperature: softmax(z / T) flattens as T grows; the order of the classes never changes.
    logits = mc.tensor([[5.0, 2.0, 1.0, -1.0]])
    for t in (1.0, 4.0, 10.0):
        print(f"softmax(z / {t:4.1f}) = {show(F.softmax(logits / t, dim=1).data[0])}")

    # 2. Why the loss multiplies the KL term by T^2: its gradient shrinks as 1 / T^2.
    teacher_logits = mc.tensor([[4.0, 1.0, 0.0, -2.0]])
    for t in (1.0, 4.0, 10.0):
        z = mc.tensor([[0.0, 0.0, 0.0, 0.0]], requires_grad=True)
        distillation_loss(z, teacher_logits, temperature=t).backward()
        scaled = np.abs(z.grad.data).sum()
        print(f"T = {t:4.1f}: |d loss / d z| = {scaled:.3f} with the T^2 factor, {scaled / t**2:.4f} without")

    # 3. The teacher: a plain CNN with many times the student's parameters.
    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=64, seed=seed)
    teacher = create_teacher_classifier(width_mult=teacher_width)
    print(f"teacher: {parameter_count(teacher)} parameters; "
          f"student: {parameter_count(create_mobile_classifier())} parameters")
    fit(teacher, train_loader, epochs=teacher_epochs, lr=1e-3, log=print)
    teacher_accuracy = accuracy(teacher, test_loader)
    print(f"teacher test accuracy {teacher_accuracy:.4f}")

    # 4. Soft labels: the teacher's view of the test digit it is least sure of, at T = 1 and at
    #    T = temperature. The runner-up classes are what a one-hot label cannot teach.
    x_test, y_test = next(iter(test_loader))
    with mc.no_grad():
        test_logits = teacher(x_test)
    i = int(F.softmax(test_logits, dim=1).data.max(1).argmin())
    print(f"a test {int(y_test.data[i])}, the teacher's least certain digit:")
    print(f"  T = 1 {show(F.softmax(test_logits[i:i + 1], dim=1).data[0])}")
    print(f"  T = {temperature:g} {show(F.softmax(test_logits[i:i + 1] / temperature, dim=1).data[0])}")

    # 5. The same student trained twice for the same number of epochs: on the labels alone, and
    #    with the teacher's soft labels mixed in (alpha of the loss on them). The digits are easy,
    #    so the student alone does well already; the gap is small and varies with the seed.
    mc.manual_seed(seed + 1)
    alone = create_mobile_classifier()
    fit(alone, train_loader, epochs=epochs, lr=1e-2)
    alone_accuracy = accuracy(alone, test_loader)
    mc.manual_seed(seed + 1)
    distilled = create_mobile_classifier()
    train_with_distillation(teacher, distilled, train_loader, epochs, temperature, alpha,
                            optimizer=Adam(distilled.parameters(), lr=1e-2), progress=False)
    distilled_accuracy = accuracy(distilled, test_loader)
    print(f"student test accuracy after {epochs} epochs: labels alone {alone_accuracy:.4f}, "
          f"distilled {distilled_accuracy:.4f}")

    # 6. Feature distillation: the student's 8x8 and 4x4 feature maps imitate the teacher's, through
    #    1x1 convolutions that map the student's channels to the teacher's. A dry run on one batch
    #    sizes those adapters, so the optimizer can see them from the start.
    mc.manual_seed(seed + 1)
    student = create_mobile_classifier()
    pairs = [("layer1", "blocks.1"), ("layer2", "blocks.3")]
    fd = FeatureDistillation(teacher, student, pairs, sample_input=x_test[:8])
    print("adapters:", ", ".join(f"{t} <- {s}: {a}" for (t, s), a in zip(pairs, fd.adapters)))
    optimizer = Adam(fd.parameters(), lr=1e-2)
    for epoch in range(1, epochs + 1):
        fd.train()
        feature_sum = total_sum = seen = 0
        for x, y in train_loader:
            optimizer.zero_grad()
            feature_loss, logits, teacher_logits = fd(x)
            loss = distillation_loss(logits, teacher_logits, y, temperature, alpha) + feature_weight * feature_loss
            loss.backward()
            optimizer.step()
            feature_sum += feature_loss.item() * len(y)
            total_sum += loss.item() * len(y)
            seen += len(y)
        print(f"epoch {epoch:3d}  feature loss {feature_sum / seen:.4f}  total {total_sum / seen:.4f}")
    feature_accuracy = accuracy(student, test_loader)
    print(f"student test accuracy with feature distillation {feature_accuracy:.4f}")
    return dict(teacher=teacher_accuracy, alone=alone_accuracy, distilled=distilled_accuracy,
                feature_distilled=feature_accuracy)


if __name__ == "__main__":
    main()
