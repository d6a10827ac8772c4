"""The one report every job prints and writes: a table of stages, each a row of measurements, as
markdown (printed and `report.md`), JSON (`report.json`) and, where matplotlib is installed (the `[plot]`
extra), two PNG charts (three with a mixed-precision table); and the output folder they are written
into, all at once or not at all.

A job's row is a dataclass (`StageResult` for the digits job, `DetectionStageResult`, `EmbedStage`); its
report is a `Report` subclass that names the columns of its table, the row field that says how good a
stage is (accuracy, mAP@0.5, cosine), and its latency fields:

    class DetectionReport(Report):
        COLUMNS = (("stage", "stage", "{}"), ("mAP@0.5", "map_50", "{:.4f}"), ...)
        QUALITY = ("map_50", "test mAP@0.5 (%)", 100)
        LATENCIES = (("latency_b1_ms", "batch 1"), ("latency_b64_ms", "batch 64"))

    report.to_markdown()            | stage | mAP@0.5 | ... |, one line per row
    report.to_dict()                {"settings": {...}, "stages": [row fields, ...]}
    with OutputFolder(out) as folder:
        io.save(model, folder.path("model.npz"))
        report.write(folder)        # report.json, report.md, the charts
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, make_dataclass


@dataclass
class Report:
    """The stage table, the models of every stage (not serialised) and the job's settings."""

    rows: list = field(default_factory=list)
    models: dict = field(default_factory=dict, repr=False)
    settings: dict = field(default_factory=dict)
    # The mixed-precision candidates (`stages.mixed_precision_stage`), one dict each; empty when the job
    # searched none. Written as a second table, a "pareto" list in report.json and pareto.png.
    pareto: list = field(default_factory=list)

    # (header, row field, format string or function of the value) per column; set by each job's report.
    COLUMNS = ()
    # (row field, axis label, scale) of the measure of quality the size chart plots.
    QUALITY = None
    # (row field, legend label) of the latencies the latency chart plots, in ms.
    LATENCIES = ()
    # The heading of the latency chart's y axis.
    LATENCY_LABEL = "ms per image"

    def row(self, stage):
        return next(r for r in self.rows if r.stage == stage)

    def to_dict(self):
        out = {"settings": self.settings, "stages": [asdict(r) for r in self.rows]}
        if self.pareto:
            out["pareto"] = self.pareto
        return out

    def to_markdown(self):
        lines = _table(self.COLUMNS, [lambda name, r=r: getattr(r, name) for r in self.rows])
        if self.pareto:
            lines += ["", ("Mixed precision (weights float32 / int8 / int4 per layer): the candidates measured, "
                           "by bytes; * = the chosen model, pareto = no other candidate is as small and as accurate"),
                      ""]
            lines += _table(PARETO_COLUMNS, [row.get for row in self.pareto])
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()

    def set_ratios(self, reference="teacher", baseline="student"):
        """Fill each row's size and batch-1 speed ratios against the `reference` and `baseline` stages."""
        teacher, student = self.row(reference), self.row(baseline)
        for r in self.rows:
            r.size_vs_teacher = teacher.bytes / r.bytes
            r.size_vs_student = student.bytes / r.bytes
            r.speedup_vs_teacher_b1 = teacher.latency_b1_ms / r.latency_b1_ms
            r.speedup_vs_student_b1 = student.latency_b1_ms / r.latency_b1_ms

    def write(self, folder):
        """report.json, report.md and the charts into `folder` (an `OutputFolder` or a folder path);
        returns the names written."""
        target = folder.path if isinstance(folder, OutputFolder) else (lambda name: os.path.join(folder, name))
        with open(target("report.json"), "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        with open(target("report.md"), "w") as f:
            f.write(self.to_markdown() + "\n")
        root = os.path.dirname(target("report.md"))
        return ["report.json", "report.md"] + [os.path.basename(p) for p in write_charts(self, root)]


def _table(columns, getters):
    """Markdown lines of a table: (header, field, format) columns, one getter(field) per row."""
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for get in getters:
        lines.append("| " + " | ".join(fmt(get(name)) if callable(fmt) else fmt.format(get(name))
                                       for _, name, fmt in columns) + " |")
    return lines


# The columns of the mixed-precision table (the dicts of `stages.mixed_precision_stage`).
PARETO_COLUMNS = (("candidate", "name", "{}"), ("precisions", "precisions", "{}"), ("bytes", "bytes", "{:,}"),
                  ("test accuracy", "metric", "{:.4f}"), ("predicted drop (points)", "predicted_drop",
                                                          lambda v: f"{100 * v:.2f}"),
                  ("measured drop (points)", "drop", lambda v: f"{100 * v:.2f}"),
                  ("ms/image (batch 1)", "latency_b1_ms", "{:.3f}"), ("ms/image (batch 64)", "latency_b64_ms", "{:.4f}"),
                  ("pareto", "pareto", lambda v: "yes" if v else ""), ("chosen", "chosen", lambda v: "*" if v else ""))


def write_pareto_chart(report, out, plt):
    """pareto.png: accuracy against bytes of the mixed-precision candidates, the measured frontier joined."""
    rows = report.pareto
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["bytes"] / 1024 for r in rows], [100 * r["metric"] for r in rows], color="tab:blue")
    front = [r for r in rows if r["pareto"]]
    ax.plot([r["bytes"] / 1024 for r in front], [100 * r["metric"] for r in front], color="tab:blue", alpha=0.5,
            label="measured frontier")
    for r in rows:
        if r["chosen"]:
            ax.scatter([r["bytes"] / 1024], [100 * r["metric"]], s=120, facecolors="none", edgecolors="tab:red",
                       label="chosen")
        if r["name"].startswith("all"):
            ax.annotate(r["name"].split(",")[0], (r["bytes"] / 1024, 100 * r["metric"]), textcoords="offset points",
                        xytext=(4, 4))
    ax.set(xlabel="model size (KiB)", ylabel="test accuracy (%)", title="mixed precision: accuracy vs size")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "pareto.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_charts(report, out):
    """Quality-vs-size and latency charts of `report` as PNG files in `out`, when matplotlib is installed
    (the `[plot]` extra); returns their paths ([] without matplotlib or without the report's fields)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import numpy as np

    rows, paths = report.rows, []
    if report.QUALITY is not None:
        name, label, scale = report.QUALITY
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter([r.bytes / 1024 for r in rows], [scale * getattr(r, name) for r in rows])
        for r in rows:
            ax.annotate(r.stage, (r.bytes / 1024, scale * getattr(r, name)), textcoords="offset points",
                        xytext=(4, 4))
        ax.set_xscale("log")
        ax.set(xlabel="model size (KiB, log scale)", ylabel=label, title=f"{label.split(' (')[0]} vs size")
        fig.tight_layout()
        paths.append(os.path.join(out, "accuracy_vs_size.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    if report.LATENCIES:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs, width = np.arange(len(rows)), 0.8 / len(report.LATENCIES)
        for i, (name, label) in enumerate(report.LATENCIES):
            offset = (i - (len(report.LATENCIES) - 1) / 2) * width
            ax.bar(xs + offset, [getattr(r, name) for r in rows], width, label=label)
        ax.set_xticks(xs, [r.stage for r in rows], rotation=30, ha="right")
        ax.set(ylabel=report.LATENCY_LABEL, title="latency")
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(out, "latency.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    if report.pareto:
        paths.append(write_pareto_chart(report, out, plt))
    return paths


# The columns after a job's measure of quality in the classification and detection tables: what a stage
# costs (parameters, bytes, latency per image at batch 1 and 64) and its ratios to the teacher and student.
COST_COLUMNS = (("parameters", "parameters", "{:,}"), ("bytes", "bytes", "{:,}"),
                ("x smaller than teacher", "size_vs_teacher", "{:.1f}"),
                ("x smaller than student", "size_vs_student", "{:.2f}"),
                ("ms/image (batch 1)", "latency_b1_ms", "{:.3f}"), ("ms/image (batch 64)", "latency_b64_ms", "{:.4f}"),
                ("x faster than student (batch 1)", "speedup_vs_student_b1", "{:.2f}"))
BATCH_LATENCIES = (("latency_b1_ms", "batch 1"), ("latency_b64_ms", "batch 64"))

# The fields behind COST_COLUMNS, in a row's order after its quality fields; the ratios are filled by
# `Report.set_ratios`.
COST_FIELDS = (("parameters", int), ("bytes", int), ("latency_b1_ms", float), ("latency_b64_ms", float),
               ("size_vs_teacher", float, field(default=0.0)), ("size_vs_student", float, field(default=0.0)),
               ("speedup_vs_teacher_b1", float, field(default=0.0)),
               ("speedup_vs_student_b1", float, field(default=0.0)))


def stage_row(name, quality_fields, module=None):
    """A job's row dataclass: `stage`, then its quality fields ((name, type) pairs), then COST_FIELDS.

        StageResult = stage_row("StageResult", [("accuracy", float)])
        StageResult("student", 0.98, 10474, 44712, 0.9, 0.1)      # stage, accuracy, parameters, bytes, ms, ms
    """
    row = make_dataclass(name, [("stage", str), *quality_fields, *COST_FIELDS])
    row.__module__ = module or row.__module__
    return row


class OutputFolderError(ValueError):
    """`out` names no folder this process can create and write."""


class OutputFolder:
    """A job's output folder, written all at once or not at all.

    Entering creates any missing parent folders and a temporary folder beside `out`, and writes and
    removes a probe file in `out` when it exists (which proves both places writable before any work starts); the job writes its files there (`path(name)`). Leaving without
    an error moves them into place: the temporary folder is renamed to `out` when `out` does not exist,
    else each file replaces its namesake in `out` (files of earlier runs that this run does not write are
    left alone). Leaving with an error, an interrupt included, removes the temporary folder and the
    parents created, so `out` is as it was: an interrupted run leaves the old folder whole.

    A probe rather than `os.access`: as root, `access` reports /proc and read-only mounts writable.
    """

    def __init__(self, out):
        if not out:
            raise OutputFolderError("--out must name a folder, got ''")
        if os.path.exists(out) and not os.path.isdir(out):
            raise OutputFolderError(f"--out {out!r} exists and is not a folder")
        self.out = os.path.abspath(out)
        self.given = out
        self.created = []
        self.staging = None

    def __enter__(self):
        missing, parent = [], os.path.dirname(self.out)
        while not os.path.isdir(parent):
            missing.insert(0, parent)
            parent = os.path.dirname(parent)
        try:
            for folder in missing:
                os.mkdir(folder)
                self.created.append(folder)
            if os.path.isdir(self.out):          # its files will be replaced: prove it writable too
                fd, probe = tempfile.mkstemp(prefix=".minicompress-probe-", dir=self.out)
                os.close(fd)
                os.remove(probe)
            self.staging = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out)}.partial-",
                                            dir=os.path.dirname(self.out))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.staging, 0o777 & ~umask)     # a folder as mkdir makes it, not mkdtemp's 0o700
        except OSError as exc:
            self._remove_created()
            raise OutputFolderError(f"cannot write to --out {self.given!r}: {exc.strerror or exc}") from None
        return self

    def path(self, name):
        """Where the job writes the file `name` (inside the temporary folder)."""
        return os.path.join(self.staging, name)

    def __exit__(self, kind, value, traceback):
        if kind is None:
            if os.path.isdir(self.out):
                for name in os.listdir(self.staging):
                    os.replace(os.path.join(self.staging, name), os.path.join(self.out, name))
                os.rmdir(self.staging)
            else:
                os.rename(self.staging, self.out)
            return False
        shutil.rmtree(self.staging, ignore_errors=True)
        self._remove_created()
        return False

    def _remove_created(self):
        """Remove the parent folders this run created, innermost first, where they are empty."""
        for folder in reversed(self.created):
            try:
                os.rmdir(folder)
            except OSError:
                return
