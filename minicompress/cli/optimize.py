"""`minicompress optimize`: the jobs, each writing its report and model into one output folder at once.

    minicompress optimize [--out DIR] [--prune 0.3] [--unstructured] [--quantize static] [--epochs 15] [--seed 0]
                          [--max-drop POINTS | --max-bytes N]       (mixed float32 / int8 / int4 weights)
    minicompress optimize --task detect [...]             (`cli/detect.py`)
    minicompress optimize --task embed --model DIR [--prune-heads 6]      (`cli/embed.py`)

Every option, and that --out is a folder it can write, is checked before any work starts; the files are
written into a temporary folder beside --out and moved into place when the job has finished
(`pipelines.report.OutputFolder`), so a run that fails or is interrupted leaves --out as it was.
"""
from __future__ import annotations

import os

from ..pipelines.report import OutputFolder, OutputFolderError
from .common import CommandError


def add_parsers(sub):
    opt = sub.add_parser("optimize", help="run distill -> prune -> quantize on the bundled digits")
    opt.add_argument("--out", default="minicompress-out", help="output folder (default: minicompress-out)")
    opt.add_argument("--prune", type=float, default=None,
                     help="fraction to prune (default 0.3; --task detect: 0.2)")
    opt.add_argument("--unstructured", action="store_true", help="global L1 pruning instead of L2 channel pruning")
    opt.add_argument("--quantize", choices=["static", "dynamic", "qat", "none"], default="static",
                     help="int8 quantization of the pruned model: static (fuse, calibrate, convert), dynamic "
                          "(Linear layers, activations quantized at run time), qat (fake-quant fine-tuning, "
                          "then convert) or none (default: static)")
    opt.add_argument("--epochs", type=int, default=None,
                     help="training epochs of each stage (default 15; --task detect: see cli/detect.py's DETECT_EPOCHS)")
    opt.add_argument("--teacher-epochs", type=int, default=None,
                     help="teacher epochs, 0 for none (default: --epochs)")
    opt.add_argument("--seed", type=int, default=0,
                     help="non-negative seed of the initialisation, data split and shuffling (default 0)")
    opt.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                     help="add a mixed-precision model: float32 / int8 / int4 weights per layer of the pruned "
                          "model, the fewest bytes losing at most POINTS test-accuracy points (measured); the "
                          "report gets a Pareto table and pareto.png, and model.npz is that model")
    opt.add_argument("--max-bytes", type=int, default=None, metavar="N",
                     help="as --max-drop, but the most accurate mixed model of at most N bytes (the whole model, "
                          "as the report's bytes column counts); not with --max-drop")
    opt.add_argument("--no-progress", action="store_true", help="no progress bars")
    opt.add_argument("--task", choices=["classify", "detect", "embed"], default="classify",
                     help="classify: the digits job (default); detect: the detector on digit scenes; "
                          "embed: compress a pretrained sentence encoder (needs --model)")
    opt.add_argument("--model", default=None, help="--task embed: the sentence encoder's directory")
    opt.add_argument("--prune-heads", type=int, default=6, help="--task embed: attention heads to remove (default 6)")
    opt.set_defaults(run=cmd_optimize)


def _check_optimize_options(args):
    """Every numeric option of `optimize`, before anything is printed or created. --prune and --epochs
    left out take the task's defaults (the digits job's 0.3 and 15, the detection job's own)."""
    if args.task == "detect":
        from minicompress.cli.detect import DETECT_EPOCHS, DETECT_PRUNE
        defaults = (DETECT_PRUNE, DETECT_EPOCHS)
    else:
        defaults = (0.3, 15)
    args.prune = defaults[0] if args.prune is None else args.prune
    args.epochs = defaults[1] if args.epochs is None else args.epochs
    if not 0.0 <= args.prune < 1.0:
        raise CommandError(f"--prune must be in [0, 1), got {args.prune}")
    if args.epochs < 1:
        raise CommandError(f"--epochs must be a positive integer, got {args.epochs}")
    if args.teacher_epochs is not None and args.teacher_epochs < 0:
        raise CommandError(f"--teacher-epochs must be a non-negative integer, got {args.teacher_epochs}")
    if args.seed < 0:
        raise CommandError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.task != "classify" and (args.max_drop is not None or args.max_bytes is not None):
        raise CommandError(f"--max-drop / --max-bytes are for the digits job (--task classify), not --task {args.task}")
    from minicompress.pipelines.classify import check_mixed_target
    try:
        check_mixed_target(args.max_drop, args.max_bytes, names=("--max-drop", "--max-bytes"))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.task == "detect" and args.quantize not in ("static", "none"):
        raise CommandError(f"--quantize {args.quantize} is not available for a detector; use static or none")


def _check_embed_options(args):
    if not args.model:
        raise CommandError("--task embed needs --model DIR (a sentence-transformers model directory)")
    if not os.path.isdir(args.model):
        raise CommandError(f"--model: no such directory: {args.model}")
    if args.prune_heads < 0:
        raise CommandError(f"--prune-heads must be >= 0, got {args.prune_heads}")


def cmd_optimize(args):
    """Check the options, run the task's job into a temporary folder, then move its files into --out."""
    _check_optimize_options(args)
    if args.task == "embed":
        _check_embed_options(args)
    if args.task == "detect":
        from .detect import optimize_detect as job
    elif args.task == "embed":
        from .embed import optimize_embed as job
    else:
        job = optimize_classify
    try:
        with OutputFolder(args.out) as folder:
            report, files, notes = job(args, folder)
            files = files + report.write(folder)
    except OutputFolderError as exc:
        raise CommandError(str(exc)) from None
    print()
    print(report.to_markdown())
    for note in notes:
        print(f"\n{note}")
    print(f"\nwrote {args.out}/" + ", ".join(files))
    return 0


def optimize_classify(args, folder):
    """The digits job (`pipelines.classify.optimize`); returns (report, files written, notes to print)."""
    import minicompress as mc
    from minicompress import io
    from minicompress.data.digits import input_preprocessing
    from minicompress.models import create_teacher_classifier
    from minicompress.nn import create_mobile_classifier
    from minicompress.pipelines.classify import optimize
    from minicompress.training import digits_loaders

    mc.manual_seed(args.seed)
    train_loader, test_loader = digits_loaders(batch_size=64, seed=args.seed)
    student = create_mobile_classifier(num_classes=10, in_channels=1)
    teacher = create_teacher_classifier(num_classes=10, in_channels=1)
    report = optimize(student, teacher, train_loader, test_loader, prune=args.prune,
                      structured=not args.unstructured, quantize=args.quantize, epochs=args.epochs,
                      teacher_epochs=args.teacher_epochs, progress=not args.no_progress, log=print,
                      max_drop=args.max_drop, max_bytes=args.max_bytes)
    final = report.models[report.rows[-1].stage]
    final.input_shape = (1, 8, 8)
    io.save(final, folder.path("model.npz"), metadata={"input": input_preprocessing()})
    return report, ["model.npz"], []
