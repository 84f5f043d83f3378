"""`graphsurgeon inspect MODEL [--tree] [--path P] [--json]`: the hierarchy and the shape tables."""

from __future__ import annotations

import argparse
import json
import sys

from graphsurgeon.capture import DEFAULT_PRESET, capture
from graphsurgeon.capture.weights_values import NONFINITE_NOTE


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model arguments every subcommand shares."""
    p.add_argument("model", nargs="?", default=DEFAULT_PRESET,
                   help=f"a preset (gpt2, bert-base-uncased, tiny-gpt2, tiny-bert), a local Hugging Face folder, "
                        f"or a hub id in the local cache (default: {DEFAULT_PRESET})")
    p.add_argument("--meta", action="store_true", help="architecture only: build on the meta device, no weight memory")
    p.add_argument("--eager-attention", action="store_true",
                   help="capture attention as explicit matmul/softmax ops instead of the fused SDPA op")


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    """How strictly the weight file must match its config (inspect, lora)."""
    p.add_argument("--allow-missing-weights", action="store_true",
                   help="initialise tensors missing from the weight file randomly (said on every run) instead of "
                        "refusing the file")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="load weights that hold NaN or inf (said on every output) instead of refusing them")


def capture_args(args):
    """Capture the model the arguments name; a partly random model is said on stderr."""
    from graphsurgeon.cli.progress import Progress

    progress = args.progress = Progress()
    try:
        cm = capture(args.model, meta=args.meta, eager_attention=args.eager_attention,
                     allow_missing_weights=getattr(args, "allow_missing_weights", False),
                     allow_nonfinite=getattr(args, "allow_nonfinite", False), progress=progress)
    finally:
        progress.done()
    if "partial" in (cm.weights, cm.materializes_to) or NONFINITE_NOTE in cm.weights_note:
        print(f"warning: {cm.materialize_note if cm.is_meta else cm.weights_note}.", file=sys.stderr)
    for note in cm.notes:  # what capture chose: eager attention, a sequence bound
        print(f"note: {note}", file=sys.stderr)
    return cm


def register(sub) -> None:
    p = sub.add_parser("inspect", help="print the composite hierarchy or one composite's shape table")
    add_model_arguments(p)
    add_weights_arguments(p)
    p.add_argument("--tree", action="store_true", help="print the composite hierarchy")
    p.add_argument("--depth", type=int, default=3, help="how deep --tree goes (default 3)")
    p.add_argument("--path", default=None, help="a composite's module path, e.g. transformer.h.0.attn")
    p.add_argument("--deep", action="store_true", help="with --path: list every tensor inside, at every depth")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run, ends_at_once=True)  # nothing to clean up after it printed: cli._end_now


def run(args) -> int:
    from graphsurgeon.graph.gc_pause import paused_gc

    with paused_gc(exiting=getattr(args, "exiting", False)):  # capture, views and tables in one pause
        return _run(args)


def _run(args) -> int:
    cm = capture_args(args)
    cm.recall = False  # nothing is edited here: no state to come back to
    args.progress(f"deriving the block view of {len(cm.gm.graph.nodes):,} nodes")
    try:
        bg = cm.blocks()
        problems = bg.sem.problems  # the semantic analyses run here, while the progress line shows
    finally:
        args.progress.done()
    for problem in problems:
        print(f"note: names and groups are partial ({problem})", file=sys.stderr)
    if args.path is not None or not args.tree:
        path = args.path or ""
        view = bg.view(path)
        data = {
            "model": cm.source_name, "class": cm.model_class, "weights": cm.weights_note, "path": path,
            "composite_class": view.class_name, "parameters": bg.param_count(path),
            "variables": [r.as_dict() for r in (deep_rows(bg, path) if args.deep else view.variables)],
        }
        if args.json:
            json.dump(data, sys.stdout, indent=2)
            print()
        else:
            print(f"{cm.model_class} · {path or '(root)'} · {view.class_name} · {data['parameters']:,} parameters · {cm.weights_note}")
            print_table(data["variables"])
        if not args.tree:
            return 0
    tree = tree_rows(bg, args.depth)
    if args.json:
        json.dump({"model": cm.source_name, "class": cm.model_class, "weights": cm.weights_note, "tree": tree}, sys.stdout, indent=2)
        print()
    else:
        print(f"{cm.source_name}: {cm.weights_note}")
        for row in tree:
            print(f"{'  ' * row['depth']}{row['label']}  {row['class']}  {row['parameters']:,}")
    return 0


def tree_rows(bg, max_depth: int) -> list[dict]:
    """The hierarchy of a graph.view.BlockGraph to `max_depth`, one row per composite."""
    rows = []

    def walk(path: str, depth: int, label: str) -> None:
        rows.append({"path": path, "label": label, "class": bg.classes[path], "parameters": bg.param_count(path), "depth": depth})
        if depth < max_depth:
            for child in bg.children.get(path, []):
                walk(child, depth + 1, bg.tree.title(child, path))

    walk("", 0, bg.classes[""])
    return rows


def deep_rows(bg, path: str):
    """Every data-carrying tensor inside the composite, at every depth (a primitive view of the subtree)."""
    from graphsurgeon.graph.semantics import rebound_steps
    from graphsurgeon.graph.view import VariableRow, op_name

    bg.view(path)  # validates the path
    scope = bg.scope(path)
    rows = []
    for node in bg.captured.gm.graph.nodes:
        chain = bg.chain.get(node)
        if chain is None or node in bg.hidden or node in bg.static or node.op in ("output", "placeholder"):
            continue
        if path and path not in chain:
            continue
        meta = bg.meta(node)
        if meta is None:
            continue
        where = chain[-1] if chain else ""
        rows.append(VariableRow(bg.sem.name(node, scope), f"{op_name(node)} @ {where or '(root)'}", meta.shape_text,
                                meta.example_text, meta.dtype, f"n:{node.name}", node.name))
    codes = [bg.sem.statement(bg.nodes[r.value], scope) for r in rows]
    for row, step in zip(rows, rebound_steps([r.name for r in rows], codes)):  # names as the canvas shows them
        row.step = step
    return rows


def print_table(rows: list[dict]) -> None:
    headers = ["name", "op / block", "shape", "example", "dtype", "fx name"]
    keys = ["name", "producer", "shape", "example_shape", "dtype", "value"]
    widths = [max(len(h), *(len(str(r[k])) for r in rows)) if rows else len(h) for h, k in zip(headers, keys)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)))
