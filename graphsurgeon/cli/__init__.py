"""Command line: `graphsurgeon [inspect|lora|edit] …`; no arguments opens the editor on the default model.

Each subcommand lives in its own module with `register(subparsers)` and a `run(args) -> int`.
Every error path ends in one line on stderr, never a traceback: a GraphsurgeonError, a bad argument, an OS
error and a closed stdout exit with status 2; Ctrl-C (even while torch is still importing) with 130;
SIGTERM / SIGHUP with 128 + the signal number, after the cleanup code ran (no temporary folder left).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from graphsurgeon.errors import GraphsurgeonError

COMMANDS = ["inspect", "lora", "edit"]  # modules graphsurgeon.cli.<name>_cmd
TRACEBACK_ENV = "GRAPHSURGEON_TRACEBACK"  # set to 1 to see the traceback of an unexpected error


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block): "error: argument --rank: invalid int value: 'x'; …"."""

    def error(self, message: str):
        raise _UsageError(f"{message}; see `{self.prog} --help`.")


class _UsageError(Exception):
    """A bad command line, as argparse words it."""


def _plain_output() -> None:
    """Under a locale that is not UTF-8 (LC_ALL=C without Python's coercion), what graphsurgeon prints ("·", "→")
    is written with backslash escapes instead of failing; the files it writes are UTF-8 whatever the locale."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        if stream is not None and encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="graphsurgeon", description="See a PyTorch model as a node graph, add LoRA, export it.")
    sub = parser.add_subparsers(dest="command")
    for name in COMMANDS:
        importlib.import_module(f"graphsurgeon.cli.{name}_cmd").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises, never prints a traceback)."""
    try:
        from graphsurgeon.signals import Terminated, terminations_raise
    except KeyboardInterrupt:
        return _say("interrupted.", 130)
    try:
        with terminations_raise():
            return _main(sys.argv[1:] if argv is None else argv, exiting=argv is None)
    except KeyboardInterrupt:
        return _say("interrupted; nothing was left half-written.", 130)
    except Terminated as err:
        return _say(f"{err}; nothing was left half-written.", err.exit_status)


def _main(argv: list[str], exiting: bool = False) -> int:
    _plain_output()
    try:
        _quiet_transformers()
        parser = build_parser()
        if not argv:
            argv = ["edit"]  # a bare `graphsurgeon` opens the editor on the default model
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help / --version: argparse printed what was asked
            return int(done.code or 0)
        if args.command is None:
            parser.print_help()
            return 2
        if sys.stdout is None and args.command != "edit":  # started with stdout closed (`>&-`): refuse before any work
            return _say("standard output is closed, so what graphsurgeon prints would be lost; run it again with the "
                        "output redirected (> out.txt, or > /dev/null to discard it). Nothing was done.", 2)
        args.exiting = exiting  # the process ends after this command (the console entry point, not main([...]))
        status = int(args.run(args) or 0)
        if sys.stdout is not None:
            sys.stdout.flush()  # a closed pipe shows here, where it is caught, not in Python's exit
        if exiting and getattr(args, "ends_at_once", False):  # a command that wrote all it writes: the interpreter's
            _end_now(status)  # teardown is skipped
        return status
    except _UsageError as err:
        return _say(str(err), 2)
    except GraphsurgeonError as err:
        return _say(str(err), 2)
    except BrokenPipeError:
        _drop_stdout()
        return _say("the output was closed before graphsurgeon finished writing it (broken pipe); the rest was "
                    "dropped.", 2)
    except OSError as err:
        if err.filename is None:  # no file named: writing the output itself failed (stdout on a full disk, /dev/full)
            _drop_stdout()
            return _say(f"cannot write the output: {err.strerror or err}.", 2)
        return _say(f"{err.strerror or err} ({err.filename}); check the path and its permissions.", 2)
    except Exception as err:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get(TRACEBACK_ENV):
            raise
        text = str(err).strip().splitlines()
        return _say(f"unexpected {type(err).__name__}: {text[0][:300] if text else ''} — this is a graphsurgeon bug; "
                    f"run again with {TRACEBACK_ENV}=1 to see where it happened.", 2)


def _say(message: str, status: int) -> int:
    """One line on stderr (if stderr is still open) and the exit status."""
    try:
        print(f"error: {message}", file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return status


def _end_now(status: int) -> None:
    """Exit without the interpreter's teardown: freeing torch's, transformers' and the graph's million objects one by
    one (~0.2 CPU s after `inspect --meta` of a 70B architecture). Only after a command that leaves nothing to clean
    up: `inspect` writes no file of its own (a hub download it made is complete and in place by then)."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(status)


def _drop_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so Python's final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _quiet_transformers() -> None:
    """No warnings or progress bars from transformers on our command line: our own lines say what happens.

    Said through the environment, which transformers reads when it is imported, so the command line does not import
    it (the editor's window paints first); through its logging API when it is imported already (a caller's process).
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
