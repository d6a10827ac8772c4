"""The 224x224 mobile classifier (1000 classes) quantized statically as the pipeline does, timed at
batch 1 and 8: minicompress int8 against minicompress float32 and torch's int8 twin (FX, x86 engine)
on the same weights and calibration data, in one run; plus the Python overhead per layer.

    python benchmarks/bench_int8_mobile.py [--repeat 15] [--profile]
"""
import argparse
import sys
import time
from pathlib import Path

from timing import THREADS, median_seconds, set_threads  # first: it sets thread environment

import numpy as np
import torch
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import minicompress as mc
from minicompress import nn
from minicompress.quant.static import quantize_static

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_twins import MobileClassifier  # noqa: E402


def models(seed=0):
    rng = np.random.default_rng(seed)
    ours = nn.create_mobile_classifier(num_classes=1000, in_channels=3).eval()
    theirs = MobileClassifier(num_classes=1000, in_channels=3).eval()
    state = {k: torch.from_numpy(np.asarray(v.data if hasattr(v, "data") else v)) for k, v in ours.state_dict().items()}
    for name, value in list(state.items()):            # non-trivial BN statistics, so folding matters
        if name.endswith("running_var"):
            state[name] = torch.from_numpy(rng.uniform(0.5, 2.0, value.shape).astype(np.float32))
        elif name.endswith("running_mean"):
            state[name] = torch.from_numpy(rng.normal(0, 0.1, value.shape).astype(np.float32))
    theirs.load_state_dict({k: v for k, v in state.items() if k in theirs.state_dict()})
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()}, strict=False)
    calibration = [rng.normal(0, 1, (2, 3, 224, 224)).astype(np.float32) for _ in range(2)]
    ours_int8 = quantize_static(ours, [mc.tensor(x) for x in calibration])
    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(theirs, get_default_qconfig_mapping("x86"), (torch.from_numpy(calibration[0]),))
    with torch.no_grad():
        for x in calibration:
            prepared(torch.from_numpy(x))
    return ours, ours_int8, theirs, convert_fx(prepared)


def layer_overhead(model, x, repeat):
    """Wall time of each leaf module's forward, summed over one batch-1 call (median of `repeat` calls)."""
    leaves = [(name, m) for name, m in model.named_modules() if not m._modules]
    times = {name: [] for name, _ in leaves}
    originals = {}
    for name, m in leaves:
        original = m.forward
        originals[name] = original

        def timed(*args, _orig=original, _name=name):
            start = time.perf_counter()
            out = _orig(*args)
            times[_name].append(time.perf_counter() - start)
            return out
        m.forward = timed
    for _ in range(repeat):
        model(x)
    for name, m in leaves:
        del m.forward
    return {name: float(np.median(t)) for name, t in times.items() if t}


def main(repeat, profile):
    set_threads()
    ours, ours_int8, theirs, theirs_int8 = models()
    print(f"threads={THREADS}; median of {repeat} calls; the 2 cores are shared with other work")
    with torch.no_grad(), mc.no_grad():
        for batch in (1, 8):
            x = np.random.default_rng(1).normal(0, 1, (batch, 3, 224, 224)).astype(np.float32)
            xm, xt = mc.tensor(x), torch.from_numpy(x)
            t_int8 = median_seconds(lambda: ours_int8(xm), repeat=repeat)
            t_float = median_seconds(lambda: ours(xm), repeat=max(5, repeat // 3))
            t_torch_int8 = median_seconds(lambda: theirs_int8(xt), repeat=repeat)
            print(f"batch {batch}: mc int8 {t_int8 * 1e3:.2f} ms, mc float32 {t_float * 1e3:.2f} ms, "
                  f"torch int8 {t_torch_int8 * 1e3:.2f} ms | mc float32 / mc int8 {t_float / t_int8:.2f}x, "
                  f"torch int8 / mc int8 {t_torch_int8 / t_int8:.2f}x")
        agree = np.mean(np.argmax(ours_int8(xm).numpy(), 1) == np.argmax(theirs_int8(xt).numpy(), 1))
        print(f"top-1 agreement with torch int8 at batch 8: {agree:.2f}")
        if profile:
            x1 = mc.tensor(np.random.default_rng(2).normal(0, 1, (1, 3, 224, 224)).astype(np.float32))
            for name, seconds in layer_overhead(ours_int8, x1, repeat).items():
                print(f"  {name:32s} {seconds * 1e6:9.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="time each layer at batch 1")
    args = parser.parse_args()
    main(args.repeat, args.profile)
