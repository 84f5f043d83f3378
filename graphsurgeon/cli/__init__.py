"""Command line: `graphsurgeon [inspect|lora|edit] …`; no arguments opens the editor on the default model.

Each subcommand lives in its own module with `register(subparsers)` and a `run(args) -> int`.
Every GraphsurgeonError becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from graphsurgeon.errors import GraphsurgeonError

COMMANDS = ["inspect", "lora", "edit"]  # modules graphsurgeon.cli.<name>_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphsurgeon", description="See a PyTorch model as a node graph, add LoRA, export it.")
    sub = parser.add_subparsers(dest="command")
    for name in COMMANDS:
        importlib.import_module(f"graphsurgeon.cli.{name}_cmd").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # No warnings or progress bars from transformers on our command line: our own lines say what happens. Set
    # before transformers is imported (it reads them once), so the editor's window does not wait for that import.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: presets and local folders only
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        argv = ["edit"]  # a bare `graphsurgeon` opens the editor on the default model
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except GraphsurgeonError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
