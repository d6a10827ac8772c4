"""The end-to-end job with its defaults on digits: wall time, the stage table, and distilled vs
trained-alone accuracy over several seeds.

    python benchmarks/bench_pipeline.py            # seeds 0 1 2
    python benchmarks/bench_pipeline.py --seeds 0  # one seed

The first seed's stage table is printed in full; then one line per seed, and the mean.
"""
import argparse
import statistics
import time

from timing import THREADS, set_threads  # first: it sets thread environment

import minicompress as mc
from minicompress.models import create_teacher_classifier
from minicompress.nn import create_mobile_classifier
from minicompress.pipelines.classify import optimize
from minicompress.training import digits_loaders


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    set_threads()
    rows = []
    for seed in args.seeds:
        mc.manual_seed(seed)
        train, test = digits_loaders(seed=seed)
        started = time.perf_counter()
        report = optimize(create_mobile_classifier(), create_teacher_classifier(), train, test, progress=False,
                          log=None)
        seconds = time.perf_counter() - started
        if not rows:
            print(f"defaults (prune=0.3 structured, static int8, 15 epochs), seed {seed}, {THREADS} threads, "
                  f"{seconds:.0f} s wall\n")
            print(report.to_markdown() + "\n")
        r = {s.stage: s for s in report.rows}
        rows.append((seed, seconds, r["student"].accuracy, r["distilled"].accuracy, r["int8"].accuracy,
                     r["int8"].size_vs_student))
    print("| seed | wall s | trained alone | distilled | final int8 | int8 x smaller than float student |")
    print("|---|---|---|---|---|---|")
    for seed, seconds, alone, distilled, final, ratio in rows:
        print(f"| {seed} | {seconds:.0f} | {alone:.4f} | {distilled:.4f} | {final:.4f} | {ratio:.2f} |")
    mean = lambda i: statistics.mean(row[i] for row in rows)  # noqa: E731
    print(f"| mean | {mean(1):.0f} | {mean(2):.4f} | {mean(3):.4f} | {mean(4):.4f} | {mean(5):.2f} |")


if __name__ == "__main__":
    main()
