"""The command line of train.py: its flags with their defaults, and the checks of their values (one line, exit 2).

Written by graphsurgeon next to train.py; runs without it."""

from __future__ import annotations

import argparse
import os

import train_save as runs
from train_data import HERE, fail, max_positions

DEFAULT_LR = {"lora": 2e-4}  # per method, as PEFT's examples
MAX_LR = 1.0  # AdamW moves every weight by about lr per step whatever the gradient: above 1 it can only diverge


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line ("error: argument --device: invalid choice: 'tpu' …"), exit status 2."""

    def error(self, message: str):
        fail(f"{message}; see `python train.py --help`.")


def parser() -> OneLineParser:
    p = OneLineParser(
        description="Train the LoRA weights of the exported model into runs/<name>/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--synthetic", action="store_true", help="random token ids (a smoke test of the set-up)")
    p.add_argument("--data", help="a text file (.txt) or JSONL (.jsonl: input_ids or text, and label, per line)")
    p.add_argument("--eval-data", help="held-out data in the same formats")
    p.add_argument("--eval-split", type=float, default=0.0, help="hold out this fraction of --data for evaluation")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: at the end)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of the whole run")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument(
        "--lr", type=float, default=DEFAULT_LR["lora"], help="peak learning rate (LoRA's, as PEFT's examples)"
    )
    p.add_argument("--warmup", type=float, default=0.03, help="linear warm-up: a fraction of --steps (< 1) or steps")
    p.add_argument(
        "--schedule", choices=("cosine", "linear", "constant"), default="cosine", help="decay after warm-up"
    )
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the gradient norm (0: no clipping)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--run-name", help="writes runs/<name>/ (default: run-<date>-<time>)")
    p.add_argument("--runs-dir", default=os.path.join(HERE, "runs"), help="where run folders go")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue this run (its folder, or its --run-name): its arguments, optimizer, step",
    )
    p.add_argument("--save-every", type=int, default=0, help="save the run every N steps (0: only at the end)")
    p.add_argument(
        "--num-labels", type=int, default=2, help="classes of the classification head (models without a head)"
    )
    p.add_argument(
        "--mask-token-id", type=int, help="the [MASK] token id for masked-LM training (default: the tokenizer's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--bf16", action="store_true", help="autocast the forward to bfloat16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute each block's activations in backward")
    p.add_argument(
        "--fsdp", action="store_true", help="under torchrun: shard with FSDP2 (fully_shard per block) instead of DDP"
    )
    p.add_argument(
        "--merge", action="store_true", help="after training, write runs/<name>/merged/ with the LoRA folded in"
    )
    p.add_argument(
        "--merge-only",
        nargs="?",
        const="",
        metavar="RUN",
        help="only write merged/ from a run (its folder or name; no RUN: the export's own weights, into runs/export/)",
    )
    return p


def _named_runs(args: argparse.Namespace) -> argparse.Namespace:
    """--resume and --merge-only take a run folder or a run's name under --runs-dir."""
    for name in ("resume", "merge_only"):
        if getattr(args, name):
            setattr(args, name, runs.run_folder(getattr(args, name), args.runs_dir))
    return args


def parse_args(argv=None) -> argparse.Namespace:
    p = parser()
    args = _named_runs(p.parse_args(argv))
    if args.resume:  # the run's own arguments, with what is given now on top (e.g. more --steps)
        saved = runs.read_run(args.resume, for_resume=True)
        own = ("resume", "run_name", "runs_dir", "fsdp")  # this invocation's: an --fsdp run resumes under DDP
        p.set_defaults(**{k: v for k, v in saved["args"].items() if k not in own})
        args = _named_runs(p.parse_args(argv))
        args.saved = saved
    for name in ("batch_size", "seq_len", "num_labels", "grad_accum"):
        least = 2 if name == "seq_len" else 1
        if getattr(args, name) < least:
            fail(f"--{name.replace('_', '-')} must be at least {least} (got {getattr(args, name)}).")
    if args.steps < 0:
        fail(f"--steps {args.steps} is not allowed: give 0 or more (0: no training, e.g. with --merge).")
    done = args.saved["state"]["step"] if args.resume else 0
    if args.resume and args.steps <= done:  # nothing to train: the run is kept as it is
        fail(
            f"{args.resume} has already trained {done} steps, so --steps {args.steps} continues nothing; give more "
            f"steps (e.g. --steps {2 * done}), or merge it with --merge-only {args.resume}."
        )
    if not 0 < args.lr < float("inf"):
        fail(f"--lr {args.lr} is not allowed: give a positive finite learning rate (e.g. {DEFAULT_LR['lora']}).")
    if args.lr > MAX_LR:
        fail(
            f"--lr {args.lr:g} is above {MAX_LR:g}, where AdamW can only diverge; give at most {MAX_LR:g} "
            f"(LoRA trains well at {DEFAULT_LR['lora']})."
        )
    if not 0 <= args.eval_split < 1:
        fail(f"--eval-split {args.eval_split} is not a fraction; give a number in [0, 1), e.g. 0.05.")
    if args.warmup < 0 or args.max_grad_norm < 0 or args.eval_every < 0 or args.save_every < 0:
        fail("--warmup, --max-grad-norm, --eval-every and --save-every take 0 or more.")
    if args.seq_len > max_positions():
        fail(
            f"--seq-len {args.seq_len} is longer than the model's {max_positions()} positions; use at most {max_positions()}."
        )
    return args
