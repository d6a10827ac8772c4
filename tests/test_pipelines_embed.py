"""The embed job: its stages on the real model (targets of the int8 stage), and the command's errors."""
import pytest

from minicompress import cli
from minicompress.pipelines.embed import SENTENCES, optimize_embed
from minilm import MODEL_DIR, requires_minilm


@requires_minilm
def test_full_range_int8_keeps_the_embeddings_and_the_retrieval():
    report = optimize_embed(MODEL_DIR, prune_heads_count=2, sentences=SENTENCES[:12], repeat=0)  # no timing
    float_row, torch_row = report.row("float32"), report.row("int8 dynamic (torch qconfig)")
    full = report.row("int8 dynamic (full range)")
    assert full.mean_cosine >= 0.99 and full.min_cosine >= 0.98  # measured 0.993 / 0.989 on all 22 sentences
    assert full.mean_cosine > torch_row.mean_cosine              # torch's 7-bit inputs: 0.94 / 0.88
    assert full.retrieval_agreement == 1.0
    assert float_row.bytes / full.bytes >= 3.5
    per_token, smooth = report.row("int8 per token"), report.row("SmoothQuant + per token")
    assert per_token.mean_cosine > full.mean_cosine and per_token.bytes == pytest.approx(full.bytes, rel=0.01)
    assert smooth.mean_cosine >= 0.995 and smooth.min_cosine >= 0.99 and smooth.retrieval_agreement == 1.0
    static = report.row("int8 static")
    assert static.mean_cosine >= 0.9 and static.bytes == pytest.approx(full.bytes, rel=0.01)
    assert report.row("heads -2").parameters < float_row.parameters
    assert sum(len(v) for v in report.heads_removed.values()) == 2
    assert "| int8 dynamic (full range) |" in report.to_markdown()


def test_embed_task_needs_a_model_directory(tmp_path, capsys):
    assert cli.main(["optimize", "--task", "embed", "--out", str(tmp_path)]) == cli.EXIT_USAGE
    assert "--task embed needs --model DIR" in capsys.readouterr().err
    assert cli.main(["optimize", "--task", "embed", "--model", str(tmp_path / "nope")]) == cli.EXIT_USAGE
    assert "no such directory" in capsys.readouterr().err
