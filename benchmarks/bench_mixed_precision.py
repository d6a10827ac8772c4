"""Mixed precision on the digits mobile classifier: per-layer float32 / int8 / int4 weights
(`quant.mixed_precision.search_precisions`) beside the uniform round-to-nearest choices on the same
model and the same test data.

    python benchmarks/bench_mixed_precision.py [--epochs 10] [--max-drop 1] [--max-bytes N] [--rounds 30]

The classifier is trained here (`fit`, Adam 1e-2, seed 0, the digits split of `training.digits_loaders`);
its batch norms are folded into the convs (as the job's mixed stage does; the unfolded model is listed
too), and every candidate is that model with its weights changed: all float32, all int8 (per channel, weight-only),
all int4 (groups of 32, weight-only), static int8 (`quantize_static`, activations int8 too), and the
mixed models for --max-drop (accuracy points) and --max-bytes (default: the all-int8 model's bytes). The
search evaluates on the test split, which is also what the table reports. Latency: ms per image at batch
1 and 64, the candidates interleaved round by round, the median over --rounds.
"""
import argparse
import copy
import statistics
import time

from timing import print_table, set_threads  # first: it sets thread environment

import numpy as np

import minicompress as mc
from minicompress import nn
from minicompress.quant import mixed_precision as mp
from minicompress.quant import fold_all_batch_norms, model_size_bytes
from minicompress.quant.static import quantize_static
from minicompress.training import accuracy, digits_loaders, fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-drop", type=float, default=1.0, help="accuracy points")
    parser.add_argument("--max-bytes", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    set_threads()

    mc.manual_seed(0)
    train_loader, test_loader = digits_loaders(batch_size=128, seed=0)
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=args.epochs, lr=1e-2, log=None)
    model.eval()
    unfolded = copy.deepcopy(model)
    fold_all_batch_norms(model, mc.tensor(np.zeros((1, 1, 8, 8), np.float32)))   # as the job's mixed stage

    def evaluate(m):
        return accuracy(m, test_loader)

    start = time.perf_counter()
    sensitivity = mp.layer_sensitivity(model, evaluate)
    seconds = time.perf_counter() - start
    print(sensitivity)
    print(f"sensitivity: {len(sensitivity)} layers x 2 precisions in {seconds:.1f} s\n")
    layers = list(sensitivity)
    candidates = {"float32, batch norms not folded": unfolded}
    candidates.update({f"all {p}": mp.apply_precisions(model, {n: p for n in layers}) for p in mp.PRECISIONS})
    candidates["static int8 (quantize_static)"] = quantize_static(unfolded, list(train_loader)[:8])
    max_bytes = args.max_bytes or model_size_bytes(candidates["all int8"])
    searches = {f"mixed, max drop {args.max_drop} points": {"max_drop": args.max_drop / 100},
                f"mixed, max bytes {max_bytes:,}": {"max_bytes": max_bytes}}
    notes = {}
    for name, target in searches.items():
        result = mp.search_precisions(model, evaluate, sensitivity=sensitivity, **target)
        candidates[name] = result.model
        counts = {p: sum(v == p for v in result.choice.values()) for p in mp.PRECISIONS}
        notes[name] = (f"{' / '.join(f'{n} {p}' for p, n in counts.items() if n)}; predicted drop "
                       f"{100 * result.predicted_drop:.2f}, {len(result.tried)} point(s) measured")

    rng = np.random.default_rng(0)
    inputs = {b: mc.tensor(rng.random((b, 1, 8, 8), dtype=np.float32)) for b in (1, 64)}
    times = {(name, b): [] for name in candidates for b in inputs}
    with mc.no_grad():
        for name, m in candidates.items():       # warm-up: JIT compilation, first-call plans
            for x in inputs.values():
                m(x)
        for _ in range(args.rounds):
            for name, m in candidates.items():
                for b, x in inputs.items():
                    t = time.perf_counter()
                    m(x)
                    times[(name, b)].append((time.perf_counter() - t) / b)
    baseline = evaluate(model)
    rows = []
    for name, m in candidates.items():
        acc = evaluate(m)
        rows.append([name, notes.get(name, ""), f"{model_size_bytes(m):,}", f"{acc:.4f}", f"{100 * (baseline - acc):.2f}",
                     f"{1e3 * statistics.median(times[(name, 1)]):.3f}",
                     f"{1e3 * statistics.median(times[(name, 64)]):.4f}"])
    print_table(rows, ["model", "precisions", "bytes", "test accuracy", "drop (points)", "ms/image b1", "ms/image b64"])


if __name__ == "__main__":
    main()
