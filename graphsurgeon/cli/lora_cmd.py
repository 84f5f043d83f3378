"""`graphsurgeon lora MODEL --targets q,v --rank 8 --alpha 16 --dropout 0.05 --layers all [--json] [--out DIR]`.

Prints the targets found (layer, role, tensor adapted, its shape, the input it reads), the parameter
budget and the validation result; optionally writes the recipe and exports the edited model.
"""

from __future__ import annotations

import json
import sys

from graphsurgeon.errors import GraphsurgeonError


class LoRAArgumentError(GraphsurgeonError):
    """A bad value on the lora command line."""


def register(sub) -> None:
    from graphsurgeon.cli.inspect_cmd import add_model_arguments

    p = sub.add_parser("lora", help="add LoRA on Q and V (or any projections) and report targets, budget, validation")
    add_model_arguments(p)
    p.add_argument("--targets", default="q,v", help="roles: q,k,v or projection names like c_proj,fc1 (default q,v)")
    p.add_argument("--rank", "-r", type=int, default=8, help="rank r of B·A (default 8)")
    p.add_argument("--alpha", type=float, default=16.0, help="scaling numerator: alpha / r (default 16)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on the LoRA branch (default 0)")
    p.add_argument("--layers", default="all", help="all, a range 0-5 or a list 0,3 (default all)")
    p.add_argument("--rslora", action="store_true", help="rank-stabilised scaling alpha / sqrt(r)")
    p.add_argument("--init", default="kaiming", choices=["kaiming", "gaussian"], help="A's initialisation")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--recipe-out", default=None, help="write the edit as a JSON recipe to this file")
    p.add_argument("--out", default=None, help="export the edited model to this folder")
    p.add_argument("--force", action="store_true", help="with --out: overwrite an existing folder")
    p.set_defaults(run=run)


def _config(args):
    from graphsurgeon.surgery.spec import LoRAConfig

    if args.rank < 1:
        raise LoRAArgumentError(f"--rank {args.rank} is not allowed: give a rank of at least 1, e.g. --rank 8.")
    if not 0.0 <= args.dropout < 1.0:
        raise LoRAArgumentError(f"--dropout {args.dropout} is not allowed: give a probability in [0, 1).")
    if args.alpha <= 0:
        raise LoRAArgumentError(f"--alpha {args.alpha} is not allowed: give a positive scaling numerator.")
    return LoRAConfig(r=args.rank, alpha=args.alpha, dropout=args.dropout, use_rslora=args.rslora, init=args.init)


def run(args) -> int:
    from graphsurgeon.capture import capture
    from graphsurgeon.graph.meta import tensor_meta
    from graphsurgeon.surgery.budget import budget, human_bytes
    from graphsurgeon.surgery.history import History, lora_command
    from graphsurgeon.validate import validate_full

    config = _config(args)
    roles = tuple(r.strip() for r in args.targets.split(",") if r.strip())
    if not roles:
        raise LoRAArgumentError("--targets is empty: give roles like q,v.")
    cm = capture(args.model, meta=args.meta, eager_attention=args.eager_attention)
    history = History(cm)
    entry = history.do(lora_command(cm, roles, args.layers, config))
    nodes = {n.name: n for n in cm.gm.graph.nodes}
    rows = []
    for block in cm.loras.values():
        t = block.target
        tm = tensor_meta(nodes[t.target_node].meta["val"], cm.dims)
        xm = tensor_meta(nodes[t.input_node].meta["val"], cm.dims)
        cols = f"[{t.columns[0]}:{t.columns[1]}]" if t.columns else ""
        rows.append({"layer": t.layer, "role": t.role, "tensor": f"{t.module}{cols}", "node": t.target_node,
                     "shape": tm.shape_text, "input": t.input_node, "input_shape": xm.shape_text, "block": block.path})
    b = budget(cm)
    diags = validate_full(cm)
    data = {"model": cm.source_name, "class": cm.model_class, "edit": entry.text, "config": config.as_dict(),
            "targets": rows, "budget": b.as_dict(), "validation": [d.as_dict() for d in diags]}
    if args.recipe_out:
        from graphsurgeon.surgery.recipe import save_recipe

        save_recipe(history, args.recipe_out)
    if args.out:
        from graphsurgeon.export import export_folder

        export_folder(cm, args.out, force=args.force)
        data["out"] = str(args.out)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
        return 0 if not diags else 1
    print(f"{cm.model_class} · {entry.text} · r={config.r} alpha={config.alpha:g} dropout={config.dropout:g}"
          f"{' rslora' if config.use_rslora else ''} (scaling {config.scaling:g})")
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
        print(f"exported to {args.out}")
    return 0 if not diags else 1


def _table(rows: list[dict]) -> None:
    headers = ["layer", "role", "tensor adapted", "shape", "reads", "input shape"]
    keys = ["layer", "role", "tensor", "shape", "input", "input_shape"]
    widths = [max(len(h), *(len(str(r[k])) for r in rows)) if rows else len(h) for h, k in zip(headers, keys)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)))
