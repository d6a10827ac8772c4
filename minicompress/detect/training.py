"""Training and evaluation loops for the detector on digit scenes.

    train, test = load_digit_scenes(1000, seed=0)
    model = create_detector()
    fit_detector(model, scene_loader(model, train, shuffle=True), epochs=10)
    print(evaluate_detector(model, test))    # {'map': ..., 'map_50': ..., 'map_75': ...}

With `resampled_scene_loader(model, digit_scene_sampler(1600, seed=0))` every epoch trains on a fresh
draw of scenes (same training digits, new placements): the detector cannot memorise the scenes,
which is what limits it on a fixed set (a teacher at 0.74 mAP@0.5 on its training scenes, 0.35 on
the test scenes, after 20 epochs of 1600 fixed scenes).
"""
import numpy as np
from tqdm import tqdm

from ..autograd import no_grad
from ..data import DataLoader, TensorDataset
from ..optim import Adam, CosineAnnealingLR
from ..tensor import Tensor
from .losses import fcos_loss
from .metrics import mean_average_precision
from .targets import fcos_targets, postprocess


def scene_loader(model, scenes, batch_size=32, shuffle=False, seed=0):
    """A DataLoader of (images, class targets (N, L), box targets (N, L, 4)) for `model`'s locations."""
    return _targets_loader(model.locations(), scenes, batch_size, shuffle, seed)


def _targets_loader(locations, scenes, batch_size, shuffle, seed):
    points, strides = locations
    pairs = [fcos_targets(b, c, points, strides) for b, c in zip(scenes.boxes, scenes.labels)]
    classes = np.stack([p[0] for p in pairs])
    boxes = np.stack([p[1] for p in pairs])
    return DataLoader(TensorDataset(scenes.images, classes, boxes), batch_size=batch_size, shuffle=shuffle, seed=seed)


class ResampledSceneLoader:
    """Batches of (images, class targets, box targets) like `scene_loader`'s, from a new set of scenes
    each pass: pass k iterates over `scene_loader(model, draw(k), ...)`, k = 0, 1, ... The first draw
    also serves `images` (calibration and sample inputs), so asking for it costs no pass."""

    def __init__(self, model, draw, batch_size=32, seed=0):
        self.points = model.locations()
        self.draw, self.batch_size, self.seed, self.epoch = draw, batch_size, seed, 0
        self.first = draw(0)

    @property
    def images(self):
        return self.first.images

    def __len__(self):
        return -(-len(self.first.images) // self.batch_size)

    def __iter__(self):
        scenes = self.first if self.epoch == 0 else self.draw(self.epoch)
        loader = _targets_loader(self.points, scenes, self.batch_size, True, self.seed + self.epoch)
        self.epoch += 1
        return iter(loader)


def resampled_scene_loader(model, draw, batch_size=32, seed=0):
    """A `ResampledSceneLoader`: `draw(k)` gives the k-th pass's `DigitScenes` (`digit_scene_sampler`)."""
    return ResampledSceneLoader(model, draw, batch_size, seed)


def detector_step(model, x, classes, boxes):
    """The FCOS loss of `model` on one batch: (total, classification, box)."""
    points, strides = model.locations()
    return fcos_loss(model(x), classes, boxes, points, strides)


def fit_detector(model, loader, epochs, lr=3e-3, optimizer=None, progress=False, log=None, desc="train"):
    """Adam with a cosine schedule over `epochs` passes of `loader`; returns per-epoch mean losses."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    optimizer = optimizer or Adam(model.parameters(), lr=lr)
    schedule = CosineAnnealingLR(optimizer, T_max=epochs) if epochs else None
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        total = seen = 0.0
        bar = tqdm(loader, desc=f"{desc} {epoch}/{epochs}", disable=not progress, leave=False)
        for x, classes, boxes in bar:
            optimizer.zero_grad()
            loss, _, _ = detector_step(model, x, classes, boxes)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        schedule.step()
        history.append({"epoch": epoch, "loss": total / seen})
        if log is not None:
            log(f"epoch {epoch:3d}  loss {total / seen:.4f}")
    return history


def predict_detections(model, images, batch_size=64, **postprocess_kwargs):
    """`postprocess`ed detections of `model` (eval mode, no graph) for (N, 1, S, S) images."""
    model.eval()
    points, strides = model.locations()
    results = []
    with no_grad():
        for start in range(0, len(images), batch_size):
            out = model(Tensor(np.ascontiguousarray(images[start:start + batch_size])))
            out = out if isinstance(out, Tensor) else out.dequantize()
            results += postprocess(out.data, points, strides, model.image_size, **postprocess_kwargs)
    return results


def evaluate_detector(model, scenes, batch_size=64):
    """COCO mAP (map, map_50, map_75) of `model` on `scenes`."""
    return mean_average_precision(predict_detections(model, scenes.images, batch_size), scenes.targets())
