"""What the editor derives after each edit — views, names, roles, groups, stacks, targets, the module's code and
outputs — equals a derivation from scratch: a new capture of the same model with the same recipe replayed.

The live session keeps every cache the editor uses warm (all views derived before each edit, code left stale by
edits until read), then inserts, undoes, redoes and adds a LoRA on every layer; after each step its derived state
must be exactly what an independent capture + replay gives (tiny GPT-2: fused q/k/v split; tiny Llama: GQA, rotary).
An undo gives the graph back its former node objects, so the derivation of that state is recalled (graph/recall.py):
checked here to be the same objects and, like every other state, equal to a fresh derivation.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from graphsurgeon.capture import capture
from graphsurgeon.graph.stale_code import is_stale
from graphsurgeon.surgery import find_targets
from graphsurgeon.surgery.recipe import replay
from graphsurgeon.ui.operate.session import EditSession
from surgery_models import build

ATTENTION = {"gpt2": "transformer.h.0.attn", "llama": "model.layers.0.self_attn"}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def derived(cm) -> dict:
    """Everything the surfaces read from a captured model, as plain comparable data (fx nodes by name)."""
    sem, bg = cm.semantics(), cm.blocks()
    views = {}
    for path in bg.paths():
        view = bg.view(path)
        views[path] = (dataclasses.asdict(view), bg.breadcrumbs(path), bg.scope(path))
    roles = sem.roles
    return {
        "values": sorted((n.name, r) for n, r in roles.values.items()),
        "modules": sorted(roles.modules.items()),
        "residuals": sorted((a.name, b.name) for a, b in roles.residuals.items()),
        "attentions": [(a.path, a.core.name, a.kind, a.output.name, a.mask.name if a.mask is not None else None,
                        a.out_projection, sorted((k, o.node.name, o.target.name if o.target is not None else None,
                                                  o.projection, o.columns) for k, o in a.operands.items()))
                       for a in sem.attentions],
        "mask_builder": sorted(n.name for n in roles.mask_builder),
        "rotary": sorted(n.name for n in roles.rotary),
        "groups": sorted((p, g.title, g.kind, g.function, sorted(n.name for n in g.nodes)) for p, g in sem.groups.items()),
        "stacks": [(s.container, s.parent, s.runs) for s in sem.stacks],
        "hidden": sorted(n.name for n in sem.hidden),
        "names": sorted((n.name, sem.name(n, sem.scope(_module(n)))) for n in cm.gm.graph.nodes),
        "targets": [t.as_dict() for t in find_targets(cm)],
        "views": views,
        "code": cm.gm.code,
        "loras": sorted(cm.loras),
    }


def _module(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next((p for p, _ in reversed(list(stack.values())) if isinstance(p, str)), "")


def _inputs(cm) -> dict:
    return dict(cm.example_inputs)


_FRESH: dict[str, tuple[dict, dict]] = {}  # (arch, recipe) -> a fresh derivation and its outputs (nothing live)


def _fresh(arch: str, steps: dict) -> tuple[dict, dict]:
    """A new capture of `arch` with `steps` replayed: what it derives and outputs, computed once per recipe (the
    states after insert, redo and undoing every-layer share one recipe; the unedited ones another)."""
    key = arch + json.dumps(steps, sort_keys=True, default=repr)
    if key not in _FRESH:
        fresh = capture(build(arch))
        if steps["steps"]:
            replay(fresh, steps)
        _FRESH[key] = derived(fresh), fresh.run(**_inputs(fresh))
    return _FRESH[key]


def _assert_same(live, arch: str, steps: dict, what: str) -> None:
    want, ref = _fresh(arch, steps)
    got = derived(live)
    for key in want:
        if key == "views":
            assert got[key].keys() == want[key].keys(), f"{what}: composite paths differ"
            for path in want[key]:
                assert got[key][path] == want[key][path], f"{what}: view {path!r} differs from a fresh derivation"
        else:
            assert got[key] == want[key], f"{what}: {key} differs from a fresh derivation"
    out = live.run(**_inputs(live))
    for k in ref:
        torch.testing.assert_close(out[k], ref[k])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_incremental_state_equals_a_fresh_derivation(arch):
    cm = capture(build(arch))
    s = EditSession(cm)
    attention = ATTENTION[arch]
    derived(cm)  # the editor's caches are warm before the first edit
    unedited = cm.semantics(), cm.blocks()
    cand = s.candidates(attention)
    q = next(i for i, t in cand.items() if t.role == "q" and "->" in i)
    v = next(i for i, t in cand.items() if t.role == "v" and "->" in i)

    s.drop(attention, q)
    assert is_stale(cm.gm)  # the edit left the code to be generated when read or run
    _assert_same(cm, arch, s.recipe(), "after insert")
    s.undo()
    assert (cm.semantics(), cm.blocks()) == unedited  # the very graph of before: its derivation is recalled
    _assert_same(cm, arch, s.recipe(), "after undo")
    s.redo()
    _assert_same(cm, arch, s.recipe(), "after redo")
    one, redone = s.recipe(), cm.semantics()
    s.drop(attention, v, every_layer=True)  # a compound edit: one LoRA per layer
    n_layers = len({t.layer for t in find_targets(cm) if t.layer is not None})
    assert len(cm.loras) == 1 + n_layers >= 3
    _assert_same(cm, arch, s.recipe(), "after every-layer")
    s.undo()
    assert cm.semantics() is redone
    _assert_same(cm, arch, one, "after undoing every-layer")
    s.undo()
    _assert_same(cm, arch, s.recipe(), "after undoing everything")
    assert cm.loras == {}
