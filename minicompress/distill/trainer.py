"""The distillation training loop: a frozen teacher, a student trained on `distillation_loss`.

    teacher = create_teacher_classifier(); fit(teacher, train_loader, epochs=10)
    student = create_mobile_classifier()
    history = train_with_distillation(teacher, student, train_loader, epochs=10, temperature=4.0)
"""
from tqdm import tqdm

from ..optim import Adam
from .losses import KnowledgeDistillation


def train_with_distillation(teacher, student, train_loader, epochs, temperature=3.0, alpha=0.7, optimizer=None,
                            progress=True, log=print):
    """Train `student` to imitate `teacher` (and fit the labels) for `epochs` passes over
    `train_loader`, which yields (inputs, integer labels) batches.

    Args:
        teacher, student: Modules with the same number of outputs; the teacher is not changed.
        epochs: a positive int.
        temperature, alpha: as in `distillation_loss`.
        optimizer: defaults to Adam(student.parameters(), lr=1e-3).
        progress: show a tqdm progress bar per epoch.
        log: called with one line per epoch (None for silence).

    Returns:
        A list with one dict per epoch: epoch, total, distillation, student (the cross-entropy),
        accuracy (on the training batches as they were seen, in train mode); losses are averaged
        over samples.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    kd = KnowledgeDistillation(teacher, student, temperature, alpha)
    optimizer = optimizer if optimizer is not None else Adam(student.parameters(), lr=1e-3)
    history = []
    for epoch in range(1, epochs + 1):
        student.train()
        sums = dict(total=0.0, distillation=0.0, student=0.0)
        correct = seen = 0
        bar = tqdm(train_loader, desc=f"distill {epoch}/{epochs}", disable=not progress, leave=False)
        for x, y in bar:
            optimizer.zero_grad()
            student_logits = student(x)
            losses = kd.loss(student_logits, kd.teacher_logits(x), y)
            losses.total.backward()
            optimizer.step()
            n = len(y)
            for key, value in losses._asdict().items():
                sums[key] += value.item() * n
            correct += int((student_logits.data.argmax(1) == y.data).sum())
            seen += n
            bar.set_postfix(loss=f"{losses.total.item():.4f}")
        if seen == 0:
            raise ValueError("train_loader yielded no batches")
        record = {"epoch": epoch, **{k: v / seen for k, v in sums.items()}, "accuracy": correct / seen}
        history.append(record)
        if log is not None:
            log(f"epoch {epoch:3d}  total {record['total']:.4f}  distillation {record['distillation']:.4f}  "
                f"student {record['student']:.4f}  accuracy {record['accuracy']:.4f}")
    return history
