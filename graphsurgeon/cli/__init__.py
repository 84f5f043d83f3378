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
        try:
            module = importlib.import_module(f"graphsurgeon.cli.{name}_cmd")
        except ModuleNotFoundError as err:
            if err.name != f"graphsurgeon.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: presets and local folders only
    _quiet_transformers()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        argv = ["edit"] if "edit" in parser._subparsers._group_actions[0].choices else ["inspect", "--tree", "--depth", "3"]
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


def _quiet_transformers() -> None:
    """No progress bars or warnings from transformers on our command line: our own lines say what happens."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
