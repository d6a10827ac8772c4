"""`minicompress optimize --task embed --model DIR`: run `optimize_embed` and print and write its table."""
import json
import os


def run_embed(args, command_error):
    """Run the embed job for the parsed command-line `args`; bad input raises `command_error`."""
    from .embed import optimize_embed

    if not args.model:
        raise command_error("--task embed needs --model DIR (a sentence-transformers model directory)")
    if not os.path.isdir(args.model):
        raise command_error(f"--model: no such directory: {args.model}")
    if args.prune_heads < 0:
        raise command_error(f"--prune-heads must be >= 0, got {args.prune_heads}")
    try:
        report = optimize_embed(args.model, prune_heads_count=args.prune_heads, log=print)
    except FileNotFoundError as exc:
        raise command_error(str(exc))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "embed_report.json"), "w") as f:
        json.dump(report.to_dict(), f, indent=2)
    with open(os.path.join(args.out, "embed_report.md"), "w") as f:
        f.write(report.to_markdown() + "\n")
    print()
    print(report.to_markdown())
    print(f"\nwrote {args.out}/embed_report.json, embed_report.md")
    return 0
