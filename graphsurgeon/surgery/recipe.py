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


OPS = ("insert", "insert_bare", "connect", "remove", "change")
CONFIG_KEYS = frozenset(LoRAConfig.__dataclass_fields__)


def replay(cm, data: dict, history=None) -> Compound:
    """Apply the recipe's steps to `cm` as one edit, with the usual checks (each insertion's local check).

    Every step is read and its target found before anything changes; a step the model refuses undoes the steps
    already applied. Either way the error is one RecipeError sentence naming the step, and `cm` is unchanged.
    """
    from graphsurgeon.surgery.history import History
    from graphsurgeon.surgery.targets import find_targets, projection_targets

    if data.get("format") != "graphsurgeon-recipe" or data.get("version") != RECIPE_VERSION:
        raise RecipeError(f"not a graphsurgeon recipe of version {RECIPE_VERSION}; "
                          f"found format {data.get('format')!r} version {data.get('version')!r}.")
    available = {(t.role, t.layer): t for t in find_targets(cm)}
    available.update({(t.role, t.layer): t for t in projection_targets(cm) if (t.role, t.layer) not in available})
    history = history or History(cm)
    commands: list[Command] = []
    for i, step in enumerate(data.get("steps", [])):
        _check_step(i, step)
        key = (step.get("role"), step.get("layer"))
        target = available.get(key)
        if target is None:
            raise RecipeError(f"step {i + 1} ({step['op']} LoRA on role {key[0]!r} of layer {key[1]}) has no "
                              f"target in this {cm.model_class}; replay it on the architecture it was made for.")
        commands.append(_Step(i, step, target))
    if not commands:
        raise RecipeError("the recipe has no steps; save one from an editor or `graphsurgeon lora --recipe-out` "
                          "after adding LoRA.")
    compound = Compound(f"Replay recipe ({len(commands)} steps)", commands)
    history.do(compound)
    return compound


def _check_step(i: int, step) -> None:
    """Refuse a malformed step with one sentence, before any change."""
    where = f"step {i + 1}"
    if not isinstance(step, dict):
        raise RecipeError(f"{where} is not an object; each step needs op, role, layer (and config or onto).")
    op = step.get("op")
    if op not in OPS:
        raise RecipeError(f"{where} has an unknown op {op!r}; recipes know {', '.join(OPS)}.")
    if op in ("insert", "insert_bare", "change"):
        config = step.get("config")
        if not isinstance(config, dict) or not set(config) <= CONFIG_KEYS:
            raise RecipeError(f"{where} ({op}) needs a config object with keys from {', '.join(sorted(CONFIG_KEYS))}; "
                              f"found {config!r}.")
        if op == "change" and not {"r", "alpha", "dropout", "use_rslora"} <= set(config):
            raise RecipeError(f"{where} (change) needs r, alpha, dropout and use_rslora in its config; found {config!r}.")
    if op == "connect" and not isinstance(step.get("onto"), str):
        raise RecipeError(f"{where} (connect) needs onto, the name of the value the LoRA output is added to.")


class _Step(Command):
    """One recipe step: its command is built when it runs (a remove/change/connect refers to a block an earlier
    step inserts); a refusal is re-raised as one RecipeError naming the step."""

    def __init__(self, index: int, step: dict, target) -> None:
        self.index, self.step, self.target = index, step, target
        self.path, self.inner = block_path(target), None
        self.text = f"{step['op']} {self.path}"

    def _build(self, cm) -> Command:
        op, cfg = self.step["op"], self.step.get("config") or {}
        if op in ("insert", "insert_bare"):
            return InsertLoRA(self.target, LoRAConfig(**cfg), bare=op == "insert_bare")
        if op == "remove":
            return RemoveLoRA(cm, self.path)
        if op == "connect":
            return ConnectLoRA(cm, self.path, self.step["onto"])
        return ChangeLoRA(cm, self.path, **{k: cfg[k] for k in ("r", "alpha", "dropout", "use_rslora")})

    def apply(self, cm):
        try:
            if self.inner is None:
                self.inner = self._build(cm)
            return self.inner.apply(cm)
        except (GraphsurgeonError, ValueError, TypeError) as err:
            step = self.step
            raise RecipeError(f"step {self.index + 1} ({step['op']} LoRA on role {step.get('role')!r} of layer "
                              f"{step.get('layer')}) was refused: {str(err).rstrip('. ')}; nothing was changed.") from err

    def revert(self, cm):
        return self.inner.revert(cm)

    def to_json(self) -> list[dict]:
        return [self.step]
