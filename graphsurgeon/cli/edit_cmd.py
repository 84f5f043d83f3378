"""`graphsurgeon edit [MODEL] [--path P] [--recipe FILE] [--screenshot FILE.png]`: the editor window."""

from __future__ import annotations

import os

from graphsurgeon.capture.presets import DEFAULT_PRESET, is_preset
from graphsurgeon.cli.inspect_cmd import add_model_arguments
from graphsurgeon.errors import GraphsurgeonError


def register(sub) -> None:
    p = sub.add_parser("edit", help="open the editor (default: GPT-2's architecture)")
    add_model_arguments(p)
    p.add_argument("--path", default="", help="open this composite, e.g. transformer.h.0.attn")
    p.add_argument("--recipe", default=None,
                   help="replay this recipe (a saved recipe or an export's surgery.json) once the model is captured, "
                        "as File → Open recipe… does")
    p.add_argument("--screenshot", default=None, help="render the window offscreen into this PNG and exit")
    p.add_argument("--prepare", action="store_true",
                   help="capture and save the model's views in the cache, so the editor paints it at once; no window")
    p.set_defaults(run=run, model=None)  # no model named: the default preset, architecture only


def run(args) -> int:
    model, meta = (args.model, args.meta) if args.model is not None else (DEFAULT_PRESET, True)
    if args.recipe is not None and not os.path.isfile(args.recipe):
        raise GraphsurgeonError(f"--recipe {args.recipe} is not a file; give a recipe saved with File → Save recipe… "
                                "or an export's surgery.json.")
    if args.screenshot:
        return _screenshot(args, model, meta)
    if args.prepare:
        return _prepare(args, model, meta)
    from graphsurgeon.ui.platform_check import window_problem

    problem = window_problem()  # before Qt is asked for a window: one sentence instead of Qt's abort
    if problem:
        raise GraphsurgeonError(problem)
    from graphsurgeon.capture import resolve

    if not is_preset(model):
        resolve(model)  # a bad source fails here, with its one-sentence error, before a window opens
    import signal
    import sys

    from graphsurgeon.ui.app import open_editor
    from graphsurgeon.ui.quit_signals import quit_on_signals

    app, win = open_editor(model, meta=meta, eager_attention=args.eager_attention, path=args.path)
    if args.recipe is not None:
        _open_when_captured(win, args.recipe)

    def flush(signum: int) -> None:  # the edits are kept for File → Recover autosaved session
        session = getattr(win.operate, "_session", None)
        if session is not None:
            session.autosave_if_due()
        kept = " (edits kept in the autosave: File → Recover autosaved session)" if session and session.dirty else ""
        print(f"graphsurgeon: {signal.Signals(signum).name}, the editor closed{kept}.", file=sys.stderr)

    with quit_on_signals(app, flush):
        return app.exec()


def _open_when_captured(win, recipe: str) -> None:
    """Replay `recipe` onto the model once, when its capture is shown live (a refused recipe says why, as the menu's)."""

    def once() -> None:
        win.model_ready.disconnect(once)
        win.operate.open_recipe(recipe)

    win.model_ready.connect(once)


def _screenshot(args, model: str, meta: bool) -> int:
    """Capture, then render the window with `--path` open into a PNG (offscreen) and exit."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from graphsurgeon.capture import capture

    cm = capture(model, meta=meta, eager_attention=args.eager_attention)
    cm.blocks().view(args.path)  # an unknown path fails here, with its one-sentence error
    from graphsurgeon.ui.app import screenshot_editor

    screenshot_editor(cm, args.path, args.screenshot)
    print(f"wrote {args.screenshot}")
    return 0


def _prepare(args, model: str, meta: bool) -> int:
    """Fill the view cache for `model` (what `make setup` does for the default), printing where it went."""
    from graphsurgeon.capture import capture
    from graphsurgeon.capture.view_cache import cache_key, store_views
    from graphsurgeon.graph.snapshot import take_snapshot

    cm = capture(model, meta=meta, eager_attention=args.eager_attention)
    file = store_views(cache_key(model, meta=meta, eager_attention=args.eager_attention), take_snapshot(cm))
    print(f"views of {model} cached in {file}" if file else f"could not write the view cache of {model}; "
          "the editor will capture it when it opens")
    return 0
