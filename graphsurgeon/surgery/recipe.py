"""Recipes: the history of edits as JSON (targets by role and layer, hyper-parameters), replayed elsewhere.

A recipe is data, never code: replaying reads the steps and calls the same commands. It carries the model
class and, per step, the module path it was made on; replay refuses another model by name (map_by_role
maps the steps by role and layer instead, and says so). Before anything changes, the whole file is
checked field by field (`recipe_problems`), every step is resolved, and the steps are applied as one
compound edit, so a bad field or a missing target changes nothing.

Format "graphsurgeon-recipe", version 1 (unchanged: files written before this check still read):
{"format", "version", "model_class", "steps": [{"op", "role", "layer", "module", "config" | "onto"}]}.
An exported folder's surgery.json reads as the recipe of its LoRA blocks.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.jsondata import DataError, read_json
from graphsurgeon.surgery.commands import ChangeLoRA, Command, Compound, ConnectLoRA, InsertLoRA, RemoveLoRA
from graphsurgeon.surgery.lora import block_path
from graphsurgeon.surgery.spec import LoRAConfig, LoRAConfigError

RECIPE_FORMAT = "graphsurgeon-recipe"
RECIPE_VERSION = 1
TOP_KEYS = ("format", "version", "model_class", "steps")
STEP_KEYS = {  # op -> the keys its step holds (all required)
    "insert": ("op", "role", "layer", "module", "config"),
    "insert_bare": ("op", "role", "layer", "module", "config"),
    "change": ("op", "role", "layer", "module", "config"),
    "remove": ("op", "role", "layer", "module"),
    "connect": ("op", "role", "layer", "module", "onto"),
}
SHOWN = 5  # problems named in one refusal


class RecipeError(GraphsurgeonError):
    """A recipe cannot be read or does not fit this model."""


def recipe_dict(history, model_class: str = "") -> dict:
    """The recipe of every applied entry of `history`, in order."""
    steps = [step for entry in history.done for step in entry.command.to_json()]
    return {"format": RECIPE_FORMAT, "version": RECIPE_VERSION,
            "model_class": model_class or history.cm.model_class, "steps": steps}


def save_recipe(history, path: str | Path) -> dict:
    """Write the recipe atomically (temp file + rename); an unwritable place raises one RecipeError sentence."""
    data = recipe_dict(history)
    path = Path(path)
    tmp = None
    try:
        if path.is_dir():
            raise RecipeError(f"cannot write the recipe to {path}: it is a folder; give a file name like recipe.json.")
        fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise RecipeError(f"cannot write the recipe to {path}: {err.strerror or err}; nothing was written, "
                          "choose a writable file.") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return data


MAX_RECIPE_BYTES = 16 * 2**20
MAX_RECIPE_DEPTH = 16  # a recipe nests 4 deep


def load_recipe(path: str | Path) -> dict:
    """Read a recipe file and check it field by field (nothing is applied)."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_RECIPE_BYTES:  # not read into memory: a recipe of every layer of a large model is ~100 KB
            raise RecipeError(f"{path} is {size / 2**20:.0f} MB, far more than a recipe holds (at most "
                              f"{MAX_RECIPE_BYTES // 2**20} MB); give a JSON file written by --recipe-out.")
        data = read_json(path, max_bytes=MAX_RECIPE_BYTES, max_depth=MAX_RECIPE_DEPTH, what="a recipe")
    except (OSError, DataError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise RecipeError(f"cannot read the recipe {path}: {reason}; give a JSON file written by --recipe-out.") from None
    if isinstance(data, dict) and "format" not in data and isinstance(data.get("loras"), list):
        data = recipe_from_surgery(data, str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"{path} is JSON but not a graphsurgeon recipe (an object with \"steps\"); "
                          "give a file written by Save recipe or --recipe-out.")
    check_recipe(data, str(path))
    return data


def recipe_from_surgery(data: dict, source: str) -> dict:
    """The recipe an exported folder's surgery.json stands for: one insert (and connect) step per LoRA block."""
    steps = []
    for i, block in enumerate(data["loras"]):
        target = block.get("target") if isinstance(block, dict) else None
        if not isinstance(target, dict):
            raise RecipeError(f"{source}: LoRA block {i + 1} has no target object; export the folder again.")
        where = {"role": target.get("role"), "layer": target.get("layer"), "module": target.get("module")}
        steps.append({"op": "insert_bare" if block.get("kind") == "bare" else "insert", **where,
                      "config": block.get("config")})
        if block.get("kind") == "bare" and block.get("wired_to"):
            steps.append({"op": "connect", **where, "onto": block["wired_to"]})
    return {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, "model_class": data.get("model_class"), "steps": steps}


# ---- the schema, field by field ------------------------------------------------------------------------
def recipe_problems(data) -> list[str]:
    """Every field of `data` that is not a valid recipe field, one phrase each ([] = valid)."""
    if not isinstance(data, dict):
        return [f"a recipe is a JSON object, not {type(data).__name__}"]
    if data.get("format") != RECIPE_FORMAT:
        return [f"format is {data.get('format')!r}: not a graphsurgeon recipe (format {RECIPE_FORMAT!r})"]
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > RECIPE_VERSION:
        return [f"version {version} was written by a newer graphsurgeon; this one reads version {RECIPE_VERSION}"]
    problems = []
    if version != RECIPE_VERSION or isinstance(version, bool):
        problems.append(f"version is {version!r}; this graphsurgeon reads version {RECIPE_VERSION}")
    problems += [f"unknown key {k!r} (a recipe has {', '.join(TOP_KEYS)})" for k in data if k not in TOP_KEYS]
    model_class = data.get("model_class")
    if isinstance(model_class, str) and model_class and model_class != model_class.strip():
        return [f"model_class {model_class!r} has spaces or a line break around the class name; write "
                f"{model_class.strip()!r}"]
    if not isinstance(data.get("model_class"), str) or not data.get("model_class"):
        problems.append(f"model_class is {data.get('model_class')!r}; give the class the recipe was made on, "
                        "e.g. \"GPT2LMHeadModel\"")
    steps = data.get("steps")
    if not isinstance(steps, list):
        problems.append(f"steps is {type(steps).__name__}, not a list of steps")
        return problems
    for i, step in enumerate(steps):
        problems += [f"step {i + 1} {p}" for p in step_problems(step)]
    return problems


def step_problems(step) -> list[str]:
    """What is wrong with one step (phrases that follow "step N")."""
    ops = ", ".join(STEP_KEYS)
    if not isinstance(step, dict):
        return [f"is {type(step).__name__} {json.dumps(step)[:60]}, not an object with op, role, layer, module"]
    if "op" not in step:
        return [f"lacks 'op' (one of {ops})"]
    op = step["op"]
    if op not in STEP_KEYS:
        return [f"has op {op!r}; recipes know {ops}"]
    keys = STEP_KEYS[op]
    out = [f"({op}) lacks {k!r}" for k in keys if k not in step]
    out += [f"({op}) has an unknown key {k!r} (a {op} step has {', '.join(keys)})" for k in step if k not in keys]
    role, layer = step.get("role"), step.get("layer")
    if "role" in step and (not isinstance(role, str) or not role):
        out.append(f"role is {role!r}; give a role like \"q\" or a projection name like \"c_proj\"")
    if "layer" in step and layer is not None and (not isinstance(layer, int) or isinstance(layer, bool) or layer < 0):
        out.append(f"layer is {layer!r}; give a layer number ≥ 0, or null outside repeated layers")
    for key in ("module", "onto"):
        if key in step and key in keys and (not isinstance(step[key], str) or not step[key]):
            out.append(f"{key} is {step[key]!r}; give a module path / node name as a string")
    if "config" in step and "config" in keys:
        try:
            LoRAConfig.from_dict(step["config"])
        except LoRAConfigError as err:
            out.append(str(err).rstrip("."))
    return out


def check_recipe(data, source: str | None = None) -> None:
    """Raise one RecipeError naming every bad field (the first few) of `data`."""
    problems = recipe_problems(data)
    if problems:
        more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        head = f"{source} is not a valid recipe" if source else "the recipe is not valid"
        raise RecipeError(f"{head}: " + "; ".join(problems[:SHOWN]) + more + "; fix these fields or save the recipe again.")


# ---- replay ---------------------------------------------------------------------------------------------
def replay(cm, data: dict, history=None, *, map_by_role: bool = False) -> Compound:
    """Apply the recipe's steps to `cm` as one edit; a bad field, another model or a missing target changes nothing.

    A recipe made on another model class, or whose module paths are not this model's, is refused by name;
    with map_by_role its steps go to this model's targets of the same role and layer, listed in the
    returned compound's `notes`.
    """
    from graphsurgeon.surgery.history import History
    from graphsurgeon.surgery.targets import find_targets, projection_targets

    check_recipe(data)
    made_on = data["model_class"]
    if made_on != cm.model_class and not map_by_role:
        example = next((s["module"] for s in data["steps"]), "")
        raise RecipeError(f"this recipe was made on {made_on}{f' ({example}, …)' if example else ''}, not on this "
                          f"{cm.model_class}; replay it on a {made_on}, or map its steps by role and layer "
                          "(--map-by-role) and check what it adapts.")
    found = find_targets(cm)
    available = {(t.role, t.layer): t for t in found}
    available.update({(t.role, t.layer): t for t in projection_targets(cm) if (t.role, t.layer) not in available})
    # the step's own module first (an encoder's and a decoder's layer 0 share a role and a layer), at its first call:
    # the insert adds it at every call of the module
    on_module = {(t.role, t.layer, t.module): t for t in reversed(found)}
    history = history or History(cm)
    commands: list[Command] = []
    notes: list[str] = []
    for i, step in enumerate(data["steps"]):
        key = (step["role"], step["layer"])
        target = on_module.get((*key, step["module"])) or available.get(key)
        if target is None and isinstance(key[0], str) and (key[0].lower(), key[1]) in available:
            raise RecipeError(f"step {i + 1} names the role {key[0]!r}, and roles are lower case: write "
                              f"{key[0].lower()!r} in the recipe.")
        if target is None:
            raise RecipeError(f"step {i + 1} ({step['op']} LoRA on role {key[0]!r} of layer {key[1]}) has no "
                              f"target in this {cm.model_class}; replay it on the architecture it was made for.")
        if target.module != step["module"]:
            if not map_by_role:
                raise RecipeError(f"step {i + 1} adapts {step['module']}, but this {cm.model_class}'s {key[0]!r} of "
                                  f"layer {key[1]} is {target.module}: the recipe was made on another model; replay it "
                                  "there, or map its steps by role and layer (--map-by-role).")
            cols = target.column_text
            notes.append(f"step {i + 1}: {step['module']} → {target.module}{cols}")
        path = block_path(target)
        if step["op"] in ("insert", "insert_bare"):
            command = InsertLoRA(target, LoRAConfig.from_dict(step["config"]), bare=step["op"] == "insert_bare")
        else:
            command = _Deferred(step, path)
        commands.append(_Numbered(i + 1, step, command))
    compound = Compound(f"Replay recipe ({len(commands)} steps)", commands)
    history.do(compound)
    compound.notes = []  # what map_by_role changed, to be said loudly
    if notes or made_on != cm.model_class:
        compound.notes.append(f"recipe made on {made_on} replayed by role and layer onto {cm.model_class}"
                              + (": " + "; ".join(notes) if notes else ""))
    return compound


class _Numbered(Command):
    """A step's command whose refusal names the step ("step 2 (insert on q of layer 0): … already adapts …")."""

    def __init__(self, number: int, step: dict, inner: Command) -> None:
        self.number, self.step, self.inner, self.text = number, step, inner, inner.text

    def apply(self, cm):
        try:
            return self.inner.apply(cm)
        except GraphsurgeonError as err:
            raise RecipeError(f"step {self.number} ({self.step['op']} on role {self.step['role']!r} of layer "
                              f"{self.step['layer']}) is refused: {err}") from None

    def revert(self, cm):
        return self.inner.revert(cm)

    def to_json(self) -> list[dict]:
        return self.inner.to_json()


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
