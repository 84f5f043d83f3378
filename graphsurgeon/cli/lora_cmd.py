"""`graphsurgeon lora MODEL --targets q,v --rank 8 --alpha 16 --dropout 0.05 --layers all [--json] [--out DIR]`.

Prints the targets found (layer, role, tensor adapted, its shape, the input it reads), the parameter
budget and the validation result; optionally writes the recipe and exports the edited model.
`--recipe FILE` replays a saved recipe instead of --targets/--rank/….

Everything the command line can check is checked before the model is captured, and everything the
model decides (targets, weights) before anything is written: a refusal leaves no file behind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from graphsurgeon.errors import GraphsurgeonError


class LoRAArgumentError(GraphsurgeonError):
    """A bad value on the lora command line."""


DEFAULTS = {"targets": "q,v", "rank": 8, "alpha": 16.0, "dropout": 0.0, "layers": "all", "rslora": False,
            "init": "kaiming"}  # applied when --recipe is not given (None = not given on the command line)
FLAGS = {"r": "--rank", "alpha": "--alpha", "dropout": "--dropout", "init": "--init", "use_rslora": "--rslora"}


def register(sub) -> None:
    from graphsurgeon.cli.inspect_cmd import add_model_arguments, add_weights_arguments

    p = sub.add_parser("lora", help="add LoRA on Q and V (or any projections) and report targets, budget, validation")
    add_model_arguments(p)
    add_weights_arguments(p)
    p.add_argument("--targets", default=None, help="roles: q,k,v or projection names like c_proj,fc1 (default q,v)")
    p.add_argument("--rank", "-r", type=int, default=None, help="rank r of B·A (default 8)")
    p.add_argument("--alpha", type=float, default=None, help="scaling numerator: alpha / r (default 16)")
    p.add_argument("--dropout", type=float, default=None, help="dropout on the LoRA branch (default 0)")
    p.add_argument("--layers", default=None, help="all, a range 0-5 or a list 0,3 (default all)")
    p.add_argument("--rslora", action="store_true", default=None, help="rank-stabilised scaling alpha / sqrt(r)")
    p.add_argument("--init", default=None, choices=["kaiming", "gaussian"], help="A's initialisation (default kaiming)")
    p.add_argument("--recipe", default=None, help="replay this recipe (written by --recipe-out or Save recipe) "
                                                  "instead of --targets/--rank/…")
    p.add_argument("--map-by-role", action="store_true",
                   help="with --recipe: replay a recipe made on another model onto the same roles and layers here")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--recipe-out", default=None, help="write the edit as a JSON recipe to this file")
    p.add_argument("--out", default=None, help="export the edited model to this folder")
    p.add_argument("--force", action="store_true", help="with --out: overwrite an existing folder")
    p.add_argument("--random-weights", action="store_true",
                   help="with --out: export even when the model has random weights (a config-only folder, a preset "
                        "without cached weights, --meta without a weight file)")
    p.set_defaults(run=run)


def _settings(args) -> None:
    """Fill in the defaults; with --recipe, refuse the flags the recipe decides."""
    given = [f"--{k.replace('_', '-')}" for k in DEFAULTS if getattr(args, k) is not None]
    if args.recipe is not None and given:
        raise LoRAArgumentError(f"--recipe replays its own targets and hyper-parameters; drop {', '.join(given)}.")
    if args.recipe is None and args.map_by_role:
        raise LoRAArgumentError("--map-by-role maps a recipe's steps; give it with --recipe FILE.")
    for k, v in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def _config(args):
    """The LoRAConfig of the command line; LoRAConfig's own check, reworded with the flag's name."""
    from graphsurgeon.surgery.spec import LoRAConfig, LoRAConfigError

    try:
        return LoRAConfig(r=args.rank, alpha=args.alpha, dropout=args.dropout, use_rslora=args.rslora, init=args.init)
    except LoRAConfigError as err:
        raise LoRAArgumentError(f"{FLAGS.get(err.field, err.field)} {err.value} is not allowed: {err.allowed}.") from None


def _writable_file(path: str, flag: str) -> None:
    """Refuse a file that cannot be written before any work is done (the write itself is atomic)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise LoRAArgumentError(f"{flag} {path} is a folder; give a file name like recipe.json.")
    if not parent.is_dir():
        raise LoRAArgumentError(f"{flag} {path}: the folder {parent} does not exist; create it or choose another path.")
    if not os.access(parent, os.W_OK):
        raise LoRAArgumentError(f"{flag} {path}: the folder {parent} is not writable; choose another path.")
    if p.exists() and not _is_recipe(p):  # an earlier recipe is replaced; any other file is the user's
        raise LoRAArgumentError(f"{flag} {path} exists and is not a graphsurgeon recipe; choose another file name "
                                "(only an earlier recipe is replaced).")


def _is_recipe(path: Path) -> bool:
    from graphsurgeon.jsondata import read_json
    from graphsurgeon.surgery.recipe import MAX_RECIPE_BYTES, MAX_RECIPE_DEPTH, RECIPE_FORMAT

    try:
        data = read_json(path, max_bytes=MAX_RECIPE_BYTES, max_depth=MAX_RECIPE_DEPTH)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == RECIPE_FORMAT


def _preflight(args) -> None:
    """What the command line alone decides, before the model is captured (a few seconds)."""
    from graphsurgeon.surgery.targets import layer_spec

    if args.recipe is None:
        _config(args)
        if not [r for r in args.targets.split(",") if r.strip()]:
            raise LoRAArgumentError("--targets is empty: give roles like q,v.")
        layer_spec(args.layers)
    for flag, value in (("--out", args.out), ("--recipe-out", args.recipe_out), ("--recipe", args.recipe)):
        if value is not None and not value.strip():
            raise LoRAArgumentError(f"{flag} is empty: give a {'folder' if flag == '--out' else 'file'} name.")
    if args.recipe_out:
        _writable_file(args.recipe_out, "--recipe-out")
        if args.out and Path(args.out).resolve() == Path(args.recipe_out).resolve():
            raise LoRAArgumentError(f"--out and --recipe-out are both {args.out}; give the recipe another file name "
                                    "(the export holds its recipe as surgery.json anyway).")
    if args.out:
        from graphsurgeon.export import check_out_folder

        check_out_folder(args.out, force=args.force, source=args.model)


def run(args) -> int:
    from graphsurgeon.cli.inspect_cmd import capture_args
    from graphsurgeon.graph.meta import tensor_meta
    from graphsurgeon.surgery.budget import budget, human_bytes
    from graphsurgeon.surgery.history import History, lora_command
    from graphsurgeon.validate import validate_full

    _settings(args)
    _preflight(args)
    recipe = None
    if args.recipe is not None:
        from graphsurgeon.surgery.recipe import load_recipe

        recipe = load_recipe(args.recipe)  # checked field by field before the model is captured
    cm = capture_args(args)
    if args.out:
        from graphsurgeon.export import check_export

        check_export(cm, args.out, force=args.force, random_weights=args.random_weights)
    history = History(cm)
    notes: list[str] = []
    if recipe is not None:
        from graphsurgeon.surgery.recipe import replay

        compound = replay(cm, recipe, history, map_by_role=args.map_by_role)
        entry, config = history.done[-1], None
        notes = compound.notes
        for note in notes:
            print(f"warning: {note}.", file=sys.stderr)
    else:
        config = _config(args)
        roles = tuple(dict.fromkeys(r.strip() for r in args.targets.split(",") if r.strip()))  # q,q is q
        entry = _insert(history, lora_command(cm, roles, args.layers, config), args.rank)
    nodes = {n.name: n for n in cm.gm.graph.nodes}
    rows = []
    for block in cm.loras.values():
        t = block.target
        tm = tensor_meta(nodes[t.target_node].meta["val"], cm.dims)
        xm = tensor_meta(nodes[t.input_node].meta["val"], cm.dims)
        rows.append({"layer": t.layer, "role": t.role, "tensor": f"{t.module}{t.column_text}", "node": t.target_node,
                     "shape": tm.shape_text, "input": t.input_node, "input_shape": xm.shape_text, "block": block.path})
    b = budget(cm)
    diags = validate_full(cm)
    data = {"model": cm.source_name, "class": cm.model_class, "weights": cm.weights_note, "edit": entry.text,
            "config": config.as_dict() if config else None, "targets": rows, "budget": b.as_dict(),
            "validation": [d.as_dict() for d in diags], "notes": notes, "capture_notes": list(cm.notes)}
    if args.out:
        from graphsurgeon.export import export_folder

        result = export_folder(cm, args.out, force=args.force, random_weights=args.random_weights)
        data["out"] = str(args.out)
        data["exported_weights"] = {"kind": result.weights, "note": result.weights_note}
        data["removed_leftovers"] = result.removed
        for name in result.removed:
            print(f"note: removed {name} beside {args.out}, left by an export that was stopped.", file=sys.stderr)
        data["self_check"] = result.check
    if args.recipe_out:
        from graphsurgeon.surgery.recipe import save_recipe

        save_recipe(history, args.recipe_out)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
        return 0 if not diags else 1
    what = (f"r={config.r} alpha={config.alpha:g} dropout={config.dropout:g}{' rslora' if config.use_rslora else ''} "
            f"(scaling {config.scaling:g})" if config else f"recipe {args.recipe}")
    print(f"{cm.model_class} · {entry.text} · {what}")
    print(f"weights: {cm.weights_note}")
    _table(rows)
    print(b.text)
    print(f"training memory (weights + LoRA grads + AdamW states, no activations): {human_bytes(b.memory_bytes)} "
          f"= frozen {human_bytes(b.frozen_bytes)} + LoRA {human_bytes(b.lora_bytes)} + grads {human_bytes(b.grad_bytes)}"
          f" + AdamW {human_bytes(b.adam_bytes)}")
    print("validation: ok (fake-tensor propagation with dynamic batch and seq, graph.lint)" if not diags else
          "validation: " + "; ".join(str(d) for d in diags))
    if args.recipe_out:
        print(f"recipe written to {args.recipe_out}")
    if args.out:
        loud = {"random": " — RANDOM weights, not a trained model (README.md says so)",
                "partial": " — some weights random (README.md says which)"}.get(result.weights, "")
        print(f"exported to {args.out}{loud}")
        print(result.check)
    return 0 if not diags else 1


def _insert(history, command, rank: int):
    """history.do(command); a rank too large for a target is blamed on --rank, naming the target."""
    from graphsurgeon.validate.diagnostics import ValidationError

    try:
        return history.do(command)
    except ValidationError as err:
        ranks = [d for d in err.diagnostics if d.expected.startswith("1 ≤ r ≤")]
        if not ranks or len(ranks) != len(err.diagnostics):
            raise
        hi = min(int(d.expected.rpartition(" ")[2]) for d in ranks)
        raise LoRAArgumentError(f"--rank {rank} is not allowed here: {ranks[0].message[:-1]}"
                                f"{f' (and {len(ranks) - 1} more targets)' if len(ranks) > 1 else ''}; give --rank "
                                f"{hi} or less.") from None


def _table(rows: list[dict]) -> None:
    headers = ["layer", "role", "tensor adapted", "shape", "reads", "input shape"]
    keys = ["layer", "role", "tensor", "shape", "input", "input_shape"]
    widths = [max(len(h), *(len(str(r[k])) for r in rows)) if rows else len(h) for h, k in zip(headers, keys)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)))
