"""The `minicompress` command: one parser, and the one place that turns an error into a line.

    minicompress optimize [--out DIR] [--prune 0.3] [--unstructured] [--quantize static] [--epochs 15] [--seed 0] [--task detect]
    minicompress optimize --task embed --model DIR [--prune-heads 6]
    minicompress inspect MODEL | MODEL.onnx | MODEL.tflite
    minicompress bench MODEL | MODEL.onnx [--batch-sizes 1,64]      (.onnx: onnxruntime timed too)
    minicompress bench MODEL.tflite [--threads 1]                   (LiteRT timed too, at the stored shapes)
    minicompress predict MODEL | MODEL.onnx | MODEL.tflite INPUT.npy [--raw]       (or --input INPUT.npy)
    minicompress check MODEL.onnx | MODEL.tflite [--input x.npy ...] [--rtol 1e-4] [--atol 1e-5]
    minicompress quantize MODEL.onnx --calibration data.npy --out model.int8.onnx

Each group of commands has its module (`optimize.py`; `files.py`: inspect and predict; `bench.py`;
`onnx.py`: check; `tflite.py`: .tflite files in all four; `quantize.py`), which adds its parsers and runs them. Bad input (a missing or non-model
file, an input of the wrong shape, an unknown option value) prints one line to stderr and exits with
status 2; no traceback. `optimize` checks every option, and that `--out` is a folder it can write, before
any work starts; a run that fails leaves `--out` as it was.
"""
from __future__ import annotations

import argparse
import sys

from . import bench, files, onnx, optimize, quantize
from .common import EXIT_USAGE, CommandError

COMMAND_GROUPS = (optimize, files, bench, onnx, quantize)


def build_parser():
    parser = argparse.ArgumentParser(prog="minicompress", description="Make a model small and fast: distill, "
                                     "prune, quantize, and compare accuracy, bytes and latency.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CommandError as exc:
        print(f"minicompress: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError) as exc:
        print(f"minicompress: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("minicompress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
