"""`graphsurgeon edit [MODEL] [--path P] [--screenshot FILE.png]`: the editor window."""

from __future__ import annotations

import os

from graphsurgeon.cli.inspect_cmd import add_model_arguments


def register(sub) -> None:
    p = sub.add_parser("edit", help="open the editor (default: GPT-2's architecture)")
    add_model_arguments(p)
    p.add_argument("--path", default="", help="open this composite, e.g. transformer.h.0.attn")
    p.add_argument("--screenshot", default=None, help="render the window offscreen into this PNG and exit")
    p.set_defaults(run=run, model=None)  # no model named: the default preset, architecture only


def run(args) -> int:
    if args.screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from graphsurgeon.capture import DEFAULT_PRESET, capture

    model, meta = (args.model, args.meta) if args.model is not None else (DEFAULT_PRESET, True)
    cm = capture(model, meta=meta, eager_attention=args.eager_attention)
    cm.blocks().view(args.path)  # an unknown path fails here, with its one-sentence error
    from graphsurgeon.ui.app import run_editor

    code = run_editor(cm, args.path, args.screenshot)
    if args.screenshot:
        print(f"wrote {args.screenshot}")
    return code
