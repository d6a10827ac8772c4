"""Tutorial 5: the whole job from Python, then the int8 model file run with NumPy and Numba only.

Run it:  python tutorials/05_edge_deployment.py

1. `optimize` trains a teacher and a student, distills, prunes 30% of the channels (and shrinks the
   layers), quantizes to int8, and reports accuracy, bytes and latency per stage.
2. The int8 model goes into one file (`mc.save`): arrays plus a JSON description, no pickle.
3. A fresh process loads the file and classifies digits; it imports nothing but minicompress,
   NumPy and Numba (and what Numba loads itself: SciPy's BLAS, when SciPy is installed).
"""
import os
import subprocess
import sys
import tempfile

import minicompress as mc
from minicompress.models import create_teacher_classifier
from minicompress.nn import create_mobile_classifier
from minicompress.pipelines.classify import optimize
from minicompress.training import digits_loaders

DEPLOY_SCRIPT = r"""
import sys
import numba
import numpy as np

numba.njit(lambda x: x + 1)(1)  # Numba's own first compile loads SciPy's BLAS when SciPy is installed
numba_own = set(sys.modules)

import minicompress as mc
from minicompress.data import train_test_split_digits

model = mc.load(sys.argv[1]).eval()
_, _, x_test, y_test = train_test_split_digits(seed=0)
with mc.no_grad():
    predictions = model(mc.tensor(x_test)).numpy().argmax(1)
print(f"deployed int8 model: test accuracy {np.mean(predictions == y_test):.4f}")
heavy = sorted(m for m in set(sys.modules) - numba_own if m.split('.')[0] in ('torch', 'scipy', 'sklearn', 'pandas'))
print("imported besides numpy/numba/minicompress:", heavy or "nothing heavy")
"""


def main(epochs=15, finetune_epochs=3, seed=0, out=None):
    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(seed=seed)
    report = optimize(create_mobile_classifier(), create_teacher_classifier(), train_loader, test_loader,
                      prune=0.3, structured=True, quantize="static", epochs=epochs,
                      finetune_epochs=finetune_epochs, progress=False)
    print(report.to_markdown())

    out = out or tempfile.mkdtemp(prefix="minicompress-")
    path = os.path.join(out, "digits-int8.npz")
    final = report.models["int8"]
    final.input_shape = (1, 8, 8)
    mc.save(final, path)
    print(f"saved {path}: {os.path.getsize(path):,} bytes on disk")

    result = subprocess.run([sys.executable, "-c", DEPLOY_SCRIPT, path], capture_output=True, text=True, check=True)
    print(result.stdout.strip())
    return report, result.stdout


if __name__ == "__main__":
    main()
