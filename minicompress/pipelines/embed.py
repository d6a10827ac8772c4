"""The sentence-embedding job behind `minicompress optimize --task embed --model DIR`: load a pretrained
sentence encoder, compress it in stages, and compare every stage with the float model.

    float32                   the model as loaded
    int8 dynamic (torch)      quantize_dynamic with torch's default qconfig: per-tensor weights, 7-bit inputs
    int8 dynamic (full)       full_range_dynamic_qconfig (per-channel weights, 8-bit inputs) for every Linear,
                              and 8-bit row-wise embedding tables
    int8 per token            every Linear quantized per token (one input range per row, int8 weights per
                              output channel), and 8-bit row-wise embedding tables
    SmoothQuant + per token   the same after SmoothQuant (Xiao et al. 2023, alpha 0.5), its factors from the
                              activations of the retrieval texts (not the sentences scored)
    int8 static               every Linear between a QuantStub and a DeQuantStub: int8 in and out, with 8-bit
                              input ranges fixed by MinMax observers over the retrieval texts (not the
                              sentences scored); softmax, LayerNorm, GELU and the residual sums stay float
    heads -N                  the N least important attention heads removed (Michel et al., 2019)
    heads -N + int8           the pruned model, then int8 as "int8 dynamic (full)"

Columns: cosine of each sentence's embedding to the float one (mean and min over the built-in sentences),
retrieval agreement (the share of queries whose best document is the float model's best), parameters (of the
float layers before quantization: int8 keeps their number), bytes (`quant.model_size_bytes`), and the median
time to encode one sentence over the whole set.
"""
import copy
import statistics
import time
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..models.sentence_encoder import SentenceEncoder
from ..prune.heads import head_importance, heads_to_prune, prune_heads
from ..quant import dtypes as qd
from ..quant.dynamic_quantize import quantize_dynamic
from ..quant.embedding import quantize_embeddings
from ..quant.observer import MinMaxObserver
from ..quant.prepare import convert, prepare
from ..quant.qconfig import (QConfig, default_dynamic_qconfig, default_per_channel_weight_observer,
                             full_range_dynamic_qconfig)
from ..quant.size import model_size_bytes
from ..quant.smoothquant import smooth_quant
from ..nn.stubs import DeQuantStub, QuantStub
from .report import Report

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "The new movie is awesome!",
    "The cat sits outside.", "The new movie is so great.", "I love pasta.", "Do you like pizza?",
    "The stock market fell sharply on Monday after weak earnings reports.",
    "Heavy rain and strong winds are expected across the north tomorrow.",
    "Quantization stores weights in eight bits instead of thirty-two.",
    "Pruning removes the weights or neurons that matter least.",
    "Crème brûlée is a French dessert with a caramelised sugar top.",
    "北京是中国的首都。", "I can't believe it's already 3 o'clock!", "Emoji like 😀 are hard for tokenizers.",
]
# (query, documents): the first document is the relevant one
RETRIEVAL = [
    ("How do I make a neural network smaller?",
     ["Quantization and pruning shrink a model so it fits on a phone.", "The football match ended in a draw.",
      "Fresh bread is best eaten warm.", "The river flooded the village last spring."]),
    ("What is the weather going to be like?",
     ["Forecasters expect rain and strong wind tomorrow.", "She plays the violin in an orchestra.",
      "Stocks fell after the earnings reports.", "A monkey is playing drums."]),
    ("Where can I get something to eat?",
     ["There is a good pizza place around the corner.", "The train leaves at seven.",
      "Neural networks learn from data.", "He painted the fence white."]),
    ("Who won the game last night?",
     ["The home team won the match 3-1 yesterday evening.", "I love pasta with tomato sauce.",
      "The cat sleeps on the sofa.", "Prices of houses keep rising."]),
]


@dataclass
class EmbedStage:
    stage: str
    mean_cosine: float
    min_cosine: float
    retrieval_agreement: float
    parameters: int
    bytes: int
    ms_per_sentence: float


class EmbedReport(Report):
    """The embedding job's stage table (`EmbedStage` rows); settings["heads_removed"] is {layer: [heads]}."""

    COLUMNS = (("stage", "stage", "{}"), ("cosine mean", "mean_cosine", "{:.4f}"), ("cosine min", "min_cosine", "{:.4f}"),
               ("retrieval agreement", "retrieval_agreement", "{:.2f}"),
               ("parameters", "parameters", lambda n: f"{n / 1e6:.2f}M"), ("MB", "bytes", lambda n: f"{n / 1e6:.1f}"),
               ("ms / sentence", "ms_per_sentence", "{:.2f}"))
    QUALITY = ("mean_cosine", "mean cosine to the float model", 1)
    LATENCIES = (("ms_per_sentence", "one sentence"),)
    LATENCY_LABEL = "ms per sentence"

    @property
    def heads_removed(self):
        return self.settings["heads_removed"]


def best_documents(encoder, retrieval=RETRIEVAL):
    """For each (query, documents): the index of the document closest (cosine) to the query."""
    out = []
    for query, documents in retrieval:
        e = encoder.encode([query] + documents)
        out.append(int(np.argmax(e[1:] @ e[0])))
    return out


def encode_latency(encoder, sentences, repeat=3):
    """Median seconds per sentence to encode `sentences` (after one warm-up pass); NaN for repeat=0."""
    if repeat == 0:
        return float("nan")
    encoder.encode(sentences)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        encoder.encode(sentences)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / len(sentences)


def int8_dynamic(encoder, full_range=True):
    """A copy of `encoder` with int8 Linear layers (and, full range, 8-bit row-wise embedding tables)."""
    qconfig = full_range_dynamic_qconfig if full_range else default_dynamic_qconfig
    quantized = quantize_dynamic(encoder, {nn.Linear: qconfig}, dtype=qd.qint8)
    return quantize_embeddings(quantized) if full_range else quantized


def int8_per_token(encoder, calibration_sentences=None, alpha=0.5):
    """A copy of `encoder` with per-token dynamic int8 Linear layers and 8-bit row-wise embedding tables; given
    calibration sentences, smoothed first (`quant.smooth_quant`, factors from their activations, `alpha`)."""
    if calibration_sentences is None:
        return quantize_embeddings(quantize_dynamic(encoder, {nn.Linear}, per_token=True))
    calibration = list(calibration_sentences)
    return quantize_embeddings(smooth_quant(encoder, lambda model: model.encode(calibration), alpha))


def calibration_texts(retrieval=RETRIEVAL):
    """The retrieval queries and documents: the calibration set of the static and SmoothQuant stages."""
    return [text for query, documents in retrieval for text in [query] + documents]


def int8_static(encoder, calibration_sentences):
    """A copy of `encoder` with static int8 Linear layers (each quantizes its input with ranges observed on
    `calibration_sentences`, then dequantizes its output) and 8-bit row-wise embedding tables."""
    model = copy.deepcopy(encoder)
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.Linear):  # in place, so the order of children stays
                module._modules[name] = nn.Sequential(QuantStub(), child, DeQuantStub())
    model.qconfig = QConfig(activation=MinMaxObserver.with_args(reduce_range=False),
                            weight=default_per_channel_weight_observer)
    prepared = prepare(model, inplace=True)
    prepared.encode(list(calibration_sentences))
    return quantize_embeddings(convert(prepared, inplace=True))


def optimize_embed(model_dir, prune_heads_count=6, sentences=SENTENCES, log=None, repeat=3):
    """Run the stages of the module docstring on the encoder in `model_dir`; returns an EmbedReport.
    `repeat` timed passes per stage give its latency (0: not timed)."""
    log = log or (lambda *a, **k: None)
    encoder = SentenceEncoder.from_pretrained(model_dir)
    reference = encoder.encode(sentences)
    reference_best = best_documents(encoder)
    rows = []

    def record(stage, model, float_model):
        e = model.encode(sentences)
        cosine = (e * reference).sum(axis=1)
        agreement = float(np.mean([a == b for a, b in zip(best_documents(model), reference_best)]))
        params = sum(p.data.size for p in float_model.parameters())
        rows.append(EmbedStage(stage, float(cosine.mean()), float(cosine.min()), agreement, params,
                               model_size_bytes(model), 1e3 * encode_latency(model, sentences, repeat)))
        log(f"{stage}: cosine {cosine.mean():.4f} (min {cosine.min():.4f}), retrieval {agreement:.2f}")

    record("float32", encoder, encoder)
    record("int8 dynamic (torch qconfig)", int8_dynamic(encoder, full_range=False), encoder)
    record("int8 dynamic (full range)", int8_dynamic(encoder), encoder)
    calibration = calibration_texts()
    record("int8 per token", int8_per_token(encoder), encoder)
    record("SmoothQuant + per token", int8_per_token(encoder, calibration), encoder)
    record("int8 static", int8_static(encoder, calibration), encoder)
    chosen = {}
    if prune_heads_count:
        half = len(sentences) // 2
        importance = head_importance(encoder, [sentences[:half], sentences[half:]])
        chosen = heads_to_prune(importance, prune_heads_count)
        pruned = prune_heads(copy.deepcopy(encoder.bert), chosen)
        pruned_encoder = SentenceEncoder(pruned, encoder.tokenizer, encoder.max_seq_length, encoder.pooling_mode)
        record(f"heads -{prune_heads_count}", pruned_encoder.eval(), pruned_encoder)
        record(f"heads -{prune_heads_count} + int8", int8_dynamic(pruned_encoder), pruned_encoder)
    return EmbedReport(rows, settings={"model": str(model_dir), "heads_removed": {str(k): v for k, v in chosen.items()}})
