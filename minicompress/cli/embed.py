"""`minicompress optimize --task embed --model DIR`: the sentence-encoder job (`pipelines.embed`); `optimize.py`
checks the options, writes the report and prints it."""


def optimize_embed(args, folder):
    """Run the embed job for the parsed command-line `args`; returns (report, files written, notes)."""
    from ..pipelines.embed import optimize_embed as run
    from .common import CommandError

    try:
        report = run(args.model, prune_heads_count=args.prune_heads, log=print)
    except FileNotFoundError as exc:
        raise CommandError(str(exc))
    return report, [], []
