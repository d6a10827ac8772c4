"""Every kind of model `io.save` accepts loads in a fresh process and gives bit-identical outputs:
each is saved here, then loaded and run in a new interpreter that imports nothing but
`minicompress.io` before loading (so a layer class that only a lazy import defines would be missed,
as `quantize_dynamic`'s were). Observed models also compare their observers' qparams after that forward,
which depend on the restored observer state (a HistogramObserver's histogram included)."""
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicompress
from minicompress import io
from minicompress.nn.module import Module

from model_kinds import KINDS, observer_states, outputs

ROOT = Path(minicompress.__file__).parent.parent

CHILD = r"""
import sys
import numpy as np
from minicompress import io
import minicompress as mc

model = io.load(sys.argv[1])
x = np.load(sys.argv[2])
with mc.no_grad():
    result = model(mc.tensor(x))
flat, stack = [], [result]
while stack:
    item = stack.pop(0)
    if isinstance(item, (tuple, list)):
        stack[:0] = list(item)
    else:
        flat.append(np.asarray(item.dequantize().data if hasattr(item, "dequantize") else item.data))
for name, module in model.named_modules():
    if hasattr(module, "calculate_qparams") and name.endswith("activation_post_process"):
        flat += [np.asarray(v) for v in module.calculate_qparams()]
np.savez(sys.argv[3], *flat)
"""


def _fresh_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_loads_in_a_fresh_process_with_identical_outputs(kind, tmp_path):
    model, x = KINDS[kind]()
    io.save(model, tmp_path / "model.npz")
    np.save(tmp_path / "x.npy", x)
    expected = outputs(model, x) + observer_states(model)
    subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "model.npz"), str(tmp_path / "x.npy"),
                    str(tmp_path / "out.npz")], check=True, env=_fresh_env(), cwd=tmp_path, timeout=300)
    with np.load(tmp_path / "out.npz") as archive:
        got = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_loaded_observed_model_still_converts_to_the_same_int8_model(tmp_path):
    from minicompress import quant as Q
    model, x = KINDS["observed_histogram"]()
    io.save(model, tmp_path / "observed.npz")
    loaded = io.load(tmp_path / "observed.npz")
    np.testing.assert_array_equal(outputs(Q.convert(model), x)[0], outputs(Q.convert(loaded), x)[0])


def test_every_layer_class_is_found_by_a_fresh_process(tmp_path):
    for info in pkgutil.walk_packages(minicompress.__path__, "minicompress."):
        if info.name != "minicompress.cli.__main__":     # running it runs the command
            __import__(info.name)
    defined = sorted(f"{c.__module__}.{c.__qualname__}" for c in io._all_subclasses(Module)
                     if c.__module__.startswith("minicompress.") and "<locals>" not in c.__qualname__)
    found = subprocess.run([sys.executable, "-c", "import json; from minicompress import io; "
                            "print(json.dumps(sorted(io._module_classes())))"],
                           check=True, env=_fresh_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert sorted(set(defined) - set(json.loads(found.stdout))) == []
