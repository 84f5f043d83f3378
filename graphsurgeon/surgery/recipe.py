"""Recipes: the history of edits as JSON (targets by role and layer, hyper-parameters), replayed elsewhere.

A recipe is data, never code: replaying reads the steps and calls the same commands. Replay resolves
every step first and applies them as one compound edit, so a missing target changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.surgery.commands import ChangeLoRA, Command, Compound, ConnectLoRA, InsertLoRA, RemoveLoRA
from graphsurgeon.surgery.lora import block_path
from graphsurgeon.surgery.spec import LoRAConfig

RECIPE_VERSION = 1


class RecipeError(GraphsurgeonError):
    """A recipe cannot be read or does not fit this model."""


def recipe_dict(history, model_class: str = "") -> dict:
    """The recipe of every applied entry of `history`, in order."""
    steps = [step for entry in history.done for step in entry.command.to_json()]
    return {"format": "graphsurgeon-recipe", "version": RECIPE_VERSION,
            "model_class": model_class or history.cm.model_class, "steps": steps}


def save_recipe(history, path: str | Path) -> dict:
    data = recipe_dict(history)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    return data


def load_recipe(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecipeError(f"cannot read the recipe {path}: {err}; give a JSON file written by --recipe-out.") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps", []), list):
        raise RecipeError(f"{path} is JSON but not a graphsurgeon recipe (an object with \"steps\"); "
                          "give a file written by Save recipe or --recipe-out.")
    return data


def replay(cm, data: dict, history=None) -> Compound:
    """Apply the recipe's steps to `cm` as one edit; a step whose target is missing fails before any change."""
    from graphsurgeon.surgery.history import History
    from graphsurgeon.surgery.targets import find_targets, projection_targets

    if data.get("format") != "graphsurgeon-recipe" or data.get("version") != RECIPE_VERSION:
        raise RecipeError(f"not a graphsurgeon recipe of version {RECIPE_VERSION}; "
                          f"found format {data.get('format')!r} version {data.get('version')!r}.")
    available = {(t.role, t.layer): t for t in find_targets(cm)}
    available.update({(t.role, t.layer): t for t in projection_targets(cm) if (t.role, t.layer) not in available})
    history = history or History(cm)
    planned: dict[str, object] = {}  # block path -> target, for steps that refer to earlier ones
    commands: list[Command] = []
    for i, step in enumerate(data.get("steps", [])):
        key = (step.get("role"), step.get("layer"))
        target = available.get(key)
        if target is None:
            raise RecipeError(f"step {i + 1} ({step.get('op')} LoRA on role {key[0]!r} of layer {key[1]}) has no "
                              f"target in this {cm.model_class}; replay it on the architecture it was made for.")
        path = block_path(target)
        if step["op"] in ("insert", "insert_bare"):
            commands.append(InsertLoRA(target, LoRAConfig(**step["config"]), bare=step["op"] == "insert_bare"))
            planned[path] = target
        elif step["op"] in ("remove", "change", "connect"):
            commands.append(_Deferred(step, path))
        else:
            raise RecipeError(f"step {i + 1} has an unknown op {step['op']!r}; recipes know insert, insert_bare, "
                              "connect, remove, change.")
    compound = Compound(f"Replay recipe ({len(commands)} steps)", commands)
    history.do(compound)
    return compound


class _Deferred(Command):
    """A remove/change/connect step: built when it runs, because its block exists only after earlier steps."""

    def __init__(self, step: dict, path: str) -> None:
        self.step, self.path, self.inner = step, path, None
        self.text = f"{step['op']} {path}"

    def apply(self, cm):
        if self.inner is None:
            if self.step["op"] == "remove":
                self.inner = RemoveLoRA(cm, self.path)
            elif self.step["op"] == "connect":
                self.inner = ConnectLoRA(cm, self.path, self.step["onto"])
            else:
                cfg = self.step["config"]
                self.inner = ChangeLoRA(cm, self.path, **{k: cfg[k] for k in ("r", "alpha", "dropout", "use_rslora")})
        return self.inner.apply(cm)

    def revert(self, cm):
        return self.inner.revert(cm)

    def to_json(self) -> list[dict]:
        return [self.step]
