"""What the command's modules share: the one error type the entry point prints (`CommandError`), and reading
a model file written by `minicompress.io.save` with the input preprocessing it records."""
from __future__ import annotations

import numpy as np

EXIT_USAGE = 2


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def load_model_file(path):
    from minicompress import io
    try:
        return io.load(path)
    except FileNotFoundError:
        raise CommandError(f"no such model file: {path}")
    except io.ModelFileError as exc:
        raise CommandError(str(exc))
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def input_spec(path):
    """The input preprocessing the model file records (its metadata's "input", written by `optimize`;
    see `data.digits.input_preprocessing`), checked; None for a file that records none."""
    from minicompress import io
    try:
        spec = io.load_metadata(path).get("input")
    except (OSError, io.ModelFileError) as exc:
        raise CommandError(str(exc))
    if spec is None:
        return None
    problem = None
    if not isinstance(spec, dict):
        problem = "it is not a JSON object"
    elif not (isinstance(spec.get("shape"), list) and spec["shape"]
              and all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 1 << 16 for n in spec["shape"])):
        problem = f"shape {spec.get('shape')!r} is not a list of positive integers"
    else:
        for key in ("range", "raw_range"):
            r = spec.get(key)
            if r is not None and not (isinstance(r, list) and len(r) == 2 and all(map(_number, r)) and r[0] < r[1]):
                problem = f"{key} {r!r} is not [low, high]"
        scale = spec.get("scale")
        if scale is not None and not (_number(scale) and scale > 0):
            problem = f"scale {scale!r} is not a positive number"
    if problem:
        raise CommandError(f"{path}: the model file's input preprocessing is malformed: {problem}")
    return spec


def _shown(dims):
    return "[" + ", ".join(str(d) if isinstance(d, int) and d >= 0 else "?" for d in dims) + "]"


def shape_forms(rank):
    """How --input-shape may be written for an input of `rank` dimensions (the batch first)."""
    return (f"give --input-shape as the {rank - 1} dims of one sample or all {rank} dims of the input "
            "(the first, the batch, is then set by --batch-sizes)")


def given_sample_shape(given, declared, name=None):
    """One sample's shape from --input-shape `given`: either the dims after the batch ("3,48,320") or the
    input's full shape ("1,3,48,320", whose batch is dropped: bench takes it from --batch-sizes).

    `declared` is the input's full declared shape ([batch, C, H, W]; ints, or str / None / negative for
    dynamic dims) or None when the model declares none; then `given` is one sample's shape, as before. The
    static dims of `declared` are checked here, before any work; for an (N, C, ...) input, a mismatch of C is
    named as the channels."""
    try:
        shape = tuple(int(v) for v in given.split(","))
    except ValueError:
        raise CommandError(f"--input-shape must be comma-separated integers, got {given!r}")
    if min(shape) < 1:
        raise CommandError(f"--input-shape must be positive integers, got {given!r}")
    if declared is None:
        return shape
    rank = len(declared)
    declared_as = f"the model's input {name + ' ' if name else ''}is {_shown(declared)}"
    if len(shape) == rank:
        shape = shape[1:]
    elif len(shape) != rank - 1:
        raise CommandError(f"--input-shape {given} has {len(shape)} dims; {declared_as}: {shape_forms(rank)}")
    for axis, (want, got) in enumerate(zip(declared[1:], shape), start=1):
        if isinstance(want, int) and want >= 0 and want != got:
            if axis == 1 and rank >= 3:     # (N, C, ...): name the channels, what a first conv layer reads
                raise CommandError(f"--input-shape {given}: the input has {got} channels; the model's first layer "
                                   f"expects {want} ({declared_as})")
            raise CommandError(f"--input-shape {given}: dim {axis} is {got}; {declared_as}")
    return shape

