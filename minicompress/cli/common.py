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
