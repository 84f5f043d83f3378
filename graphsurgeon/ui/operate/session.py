"""EditSession: the Qt-free core of the operate gesture (drop targets, refusals, edits, undo, recipe, autosave).

No PySide6 here: the window maps drops / panel edits onto these calls and repaints from `cm`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from graphsurgeon.cache_dir import cache_root
from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.surgery import ChangeLoRA, Compound, ConnectLoRA, History, InsertLoRA, LoRAConfig, RemoveLoRA, Target
from graphsurgeon.surgery import find_targets, projection_targets, resolve_targets
from graphsurgeon.surgery.targets import per_module
from graphsurgeon.surgery.history import Entry

KINDS = ("add_lora", "lora")


class OperateError(GraphsurgeonError):
    """A drop or edit in the editor was refused."""


def model_identity(cm) -> dict | None:
    """What an autosave is keyed to: the model source (a folder as its absolute path), meta or not, eager attention.

    None for a model that cannot be captured again by name (an nn.Module given from Python): nothing to recover.
    """
    source = cm.source_name
    if not source or source.startswith("<"):
        return None
    if os.path.exists(os.path.expanduser(source)):
        source = str(Path(os.path.expanduser(source)).resolve())
    return {"source": source, "meta": bool(cm.is_meta), "eager": cm.attn_implementation == "eager"}


def autosave_path(cm) -> Path | None:
    """$GRAPHSURGEON_CACHE_DIR/autosave/<model key>.json: one file per model, so model B never sees A's edits."""
    ident = model_identity(cm)
    if ident is None:
        return None
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "autosave" / f"{key}.json"


MAX_AUTOSAVE_BYTES = 16 * 2**20  # an autosave is a recipe with 4 fields around it
AUTOSAVE_SCHEMA = {"source": str, "meta": bool, "eager": bool, "model_class?": str, "recipe": dict}


def pending_recovery(cm) -> dict | None:
    """The autosave a session on this same model left without closing cleanly, or None (see read_recovery)."""
    return read_recovery(cm)[0]


def read_recovery(cm) -> tuple[dict | None, str | None]:
    """(the autosave to offer, None) or (None, one sentence why the autosave there cannot be offered) or (None, None).

    The file is the app's own but read as untrusted data: bounded in size and depth, its fields and its recipe
    checked (recipe_problems) before anything is offered, so recovering it cannot fail on a field."""
    from graphsurgeon.jsondata import DataError, read_json, schema_problems
    from graphsurgeon.surgery.recipe import MAX_RECIPE_DEPTH, recipe_problems

    path = autosave_path(cm)
    if path is None or not path.exists():
        return None, None
    try:
        data = read_json(path, max_bytes=MAX_AUTOSAVE_BYTES, max_depth=MAX_RECIPE_DEPTH + 1, what="an autosave")
    except (OSError, DataError) as err:
        return None, _unrecoverable(path, err.strerror if isinstance(err, OSError) and err.strerror else str(err))
    problems = schema_problems(data, AUTOSAVE_SCHEMA) or recipe_problems(data["recipe"])
    if problems:
        return None, _unrecoverable(path, "; ".join(problems[:3]))
    if not data["recipe"]["steps"]:
        return None, None
    same = all(data.get(k) == v for k, v in model_identity(cm).items())  # a hash collision is not a recovery
    return (data, None) if same else (None, None)


def _unrecoverable(path: Path, why: str) -> str:
    return (f"the autosave {path} cannot be recovered ({why}); it is left as it is, delete it to stop this "
            "message.")


def _known_kind(kind: str) -> None:
    if kind not in KINDS:
        raise OperateError(f"unknown palette block {kind!r}; use one of {', '.join(KINDS)}.")


class EditSession:
    """One open model with its undo history, as the editor operates on it."""

    def __init__(self, cm, later=None) -> None:
        self.cm = cm
        self.history = History(cm)
        self.dirty = False
        self.later = later  # runs a callable after the frame (the editor's QTimer); None: autosave at once
        self._autosave_due = False
        self._candidates: tuple = (None, {})  # ((cm.version, view path), candidates) of the last question

    # ---- where a LoRA may go -------------------------------------------------------------------
    def _targets(self) -> dict[str, Target]:
        """Target per fx node name: Q/K/V by dataflow first, then any whole projection output."""
        by_node: dict[str, Target] = {}
        for t in find_targets(self.cm):
            by_node.setdefault(t.target_node, t)
        for t in projection_targets(self.cm):
            by_node.setdefault(t.target_node, t)
        return by_node

    def candidates(self, path: str) -> dict[str, Target]:
        """Ids (blocks, ports, links) of the view at `path` where a LoRA may be dropped, with their target.

        Remembered until the next edit (`cm.version`): the drag, every refused hover and the drop ask for the same."""
        key = (self.cm.version, path)
        if self._candidates[0] != key:
            self._candidates = (key, self._find_candidates(path))
        return dict(self._candidates[1])

    def _find_candidates(self, path: str) -> dict[str, Target]:
        targets = self._targets()
        out: dict[str, Target] = {}
        view = self.cm.blocks().view(path)
        for block in view.blocks:
            if block.kind == "composite":
                whole = [t for t in targets.values() if t.module == block.module_path and not t.is_slice]
                if whole and len(block.outputs) == 1 and block.outputs[0].value == whole[0].target_node:
                    out[block.id] = whole[0]
            if block.kind in ("composite", "primitive"):
                for port in block.outputs:
                    if port.value in targets and (targets[port.value].is_slice or block.kind == "composite"):
                        out[port.id] = targets[port.value]
        for link in view.links:
            if link.value in targets:
                out[link.id] = targets[link.value]
        return out

    def why_not(self, path: str, id: str) -> str:
        """One sentence: why a LoRA cannot be dropped on `id` of the view at `path` ("" if it can)."""
        if id in self.candidates(path):
            return ""
        view = self.cm.blocks().view(path)
        link = next((l for l in view.links if l.id == id), None)
        port = None
        if link is None:
            port = next((p for b in view.blocks for p in b.outputs if p.id == id), None)
        value = link or port
        if value is not None:
            meta = value.meta
            shape = meta.shape_text if meta is not None else "(no shape)"
            if meta is not None and meta.kind != "float":
                kind = "integer" if meta.kind == "int" else meta.kind
                return (f"{kind} tensor {value.value} {shape} cannot take a LoRA: LoRA adapts the "
                        f"floating-point output of a Linear/Conv1D projection; drop onto query/value or c_attn's q/v.")
            reason = self._check_text(value.value)
            return f"{value.value} {shape} cannot take a LoRA: {reason}"
        block = next((b for b in view.blocks if b.id == id), None)
        if block is None:
            return f"{id} is not in the view of {path or 'the model'}; drop onto a block or link shown there."
        if block.kind in ("input", "output"):
            return (f"the view's {block.title} are not a projection; drop onto a Linear/Conv1D "
                    "(query, value, c_attn's q/v).")
        return (f"{block.title} ({block.subtitle}) has no projection weight to adapt; drop onto a Linear/Conv1D "
                "(query, value, c_attn's q/v).")

    def _check_text(self, node: str) -> str:
        """check_insertion's reason for a tensor no projection produces (reused as the refusal text)."""
        from graphsurgeon.validate import check_insertion

        probe = Target(layer=None, role="?", module="", kind="linear", target_node=node, input_node=node,
                       in_features=0, out_features=0)
        problems = check_insertion(self.cm, probe, LoRAConfig())
        if problems:
            return problems[0].message if hasattr(problems[0], "message") else str(problems[0])
        return "it is not the output of a Linear/Conv1D projection."

    # ---- edits ---------------------------------------------------------------------------------
    def drop(self, path: str, id: str, kind: str = "add_lora", config: LoRAConfig | None = None,
             every_layer: bool = False) -> Entry:
        """Insert a LoRA block where `id` was dropped; every_layer = same role on all layers as one edit."""
        _known_kind(kind)
        target = self.candidates(path).get(id)
        if target is None:
            raise OperateError(self.why_not(path, id))
        return self._insert(target, kind, config, every_layer)

    def drop_on_module(self, module: str, kind: str = "add_lora", config: LoRAConfig | None = None,
                       every_layer: bool = False) -> Entry:
        """A drop queued on a module while only its preview was shown: a LoRA on that projection's whole output."""
        _known_kind(kind)
        target = next((t for t in self._targets().values() if t.module == module and not t.is_slice), None)
        if target is None:
            raise OperateError(f"{module} turned out to have no whole Linear/Conv1D output in the captured graph, "
                               "so it cannot take a LoRA; drop onto a highlighted block or link of its view instead.")
        return self._insert(target, kind, config, every_layer)

    def _insert(self, target: Target, kind: str, config: LoRAConfig | None, every_layer: bool) -> Entry:
        config = config or LoRAConfig()
        bare = kind == "lora"  # the LoRA Layer alone: its output is wired by the user (connect)
        if every_layer:
            targets = per_module([t for t in resolve_targets(self.cm, (target.role,), "all")
                                  if t.layer is not None or t.module == target.module])
            what = "bare LoRA Layer" if bare else "LoRA Layer"
            text = f"Add {what} ({target.role}, r={config.r}) to {len(targets)} layer(s)"
            command = Compound(text, [InsertLoRA(t, config, bare=bare) for t in targets])
        else:
            command = InsertLoRA(target, config, bare=bare)
        return self._do(command)

    # ---- wiring a bare LoRA Layer -----------------------------------------------------------------
    def _value_of(self, path: str, id: str) -> str | None:
        """The fx value a link / output port id of the view at `path` carries (an fx node name passes through)."""
        view = self.cm.blocks().view(path)
        for link in view.links:
            if link.id == id:
                return link.value
        for block in view.blocks:
            for port in block.outputs:
                if port.id == id:
                    return port.value
            if block.id == id and len(block.outputs) == 1:  # a block with one output: that output
                return block.outputs[0].value
        return id if any(n.name == id for n in self.cm.gm.graph.nodes) else None

    def connect_candidates(self, path: str, block_path: str) -> set[str]:
        """Link and output-port ids of the view at `path` the bare block's output may be wired onto."""
        block = self.cm.loras.get(block_path)
        if block is None or block.kind != "bare" or block.wired_to:
            return set()
        view = self.cm.blocks().view(path)
        own = f"m:{block_path}"
        want = next((p.meta for b in view.blocks if b.id == own for p in b.outputs), None)
        if want is None:
            return set()
        ids = {l.id: l.value for l in view.links if not l.src.startswith(own + "/")}
        ids.update({p.id: p.value for b in view.blocks if b.id != own and b.kind in ("primitive", "composite")
                    for p in b.outputs})
        shaped = {i: v for i, v in ids.items() if v is not None}
        return {i for i, v in shaped.items() if self._meta_of(view, i) == want and self._can_connect(block_path, v)}

    @staticmethod
    def _meta_of(view, id: str):
        for link in view.links:
            if link.id == id:
                return link.meta
        return next((p.meta for b in view.blocks for p in b.outputs if p.id == id), None)

    def _can_connect(self, block_path: str, value: str) -> bool:
        from graphsurgeon.surgery.lora import check_connect

        return not check_connect(self.cm, block_path, value)

    def connect(self, path: str, block_path: str, onto_id: str) -> Entry:
        """Wire the bare LoRA Layer at `block_path` onto the link / output port `onto_id` of the view at `path`."""
        block = self.cm.loras.get(block_path)
        if block is None or block.kind != "bare":
            raise OperateError(f"only a bare LoRA Layer's output can be wired by hand; {block_path or 'this'} is not one "
                               "(drop \"LoRA Layer\" from the palette first).")
        value = self._value_of(path, onto_id)
        if value is None:
            raise OperateError(f"release the wire on a link or an output of a block; {onto_id or 'the background'} "
                               "carries no value.")
        return self._do(ConnectLoRA(self.cm, block_path, value))

    def edit(self, block_path: str, r: int | None = None, alpha: float | None = None,
             dropout: float | None = None) -> Entry:
        """Change r / alpha / dropout of a LoRA block; invalid values are refused with a reason (by LoRAConfig)."""
        changes = {k: v for k, v in (("r", r), ("alpha", alpha), ("dropout", dropout)) if v is not None}
        if not changes:
            raise OperateError("nothing to change; give r, alpha or dropout.")
        return self._do(ChangeLoRA(self.cm, block_path, **changes))

    def delete(self, block_path: str) -> Entry:
        """Remove a LoRA block (undoable)."""
        if block_path not in self.cm.loras:
            raise OperateError(f"{block_path!r} is not a LoRA block; only inserted LoRA blocks can be deleted.")
        return self._do(RemoveLoRA(self.cm, block_path))

    def _do(self, command) -> Entry:
        entry = self.history.do(command)  # refused → raises, nothing changed
        self._changed()
        return entry

    def undo(self) -> None:
        if not self.history.can_undo:
            raise OperateError("nothing to undo.")
        self.history.undo()
        self._changed()

    def redo(self) -> None:
        if not self.history.can_redo:
            raise OperateError("nothing to redo.")
        self.history.redo()
        self._changed()

    def _changed(self) -> None:
        self.cm.touch()
        self.dirty = True
        if self.later is None:
            self.autosave()
        elif not self._autosave_due:  # the editor writes it right after repainting (one file write off the frame)
            self._autosave_due = True
            self.later(self.autosave_if_due)

    def autosave_if_due(self) -> None:
        """Write the autosave an edit left pending (the editor calls it after the frame, and before closing)."""
        if self._autosave_due:
            self._autosave_due = False
            self.autosave()

    @property
    def history_texts(self) -> list[str]:
        return self.history.texts

    # ---- status ----------------------------------------------------------------------------------
    def budget(self):
        from graphsurgeon.surgery.budget import budget

        return budget(self.cm)

    def diagnostics(self) -> list:
        from graphsurgeon.validate import validate_full

        return validate_full(self.cm)

    # ---- files -------------------------------------------------------------------------------
    def recipe(self) -> dict:
        from graphsurgeon.surgery.recipe import recipe_dict

        return recipe_dict(self.history)

    def save_recipe(self, file) -> dict:
        from graphsurgeon.surgery.recipe import save_recipe

        data = save_recipe(self.history, file)
        self.dirty = False
        return data

    def open_recipe(self, file) -> Entry:
        """Replay a recipe file onto the open model as one undoable edit (refused as a whole, with one sentence)."""
        from graphsurgeon.surgery.recipe import load_recipe, replay

        data = load_recipe(file)
        if not data["steps"]:
            raise OperateError(f"the recipe {Path(file).name} has no steps; nothing to replay (save one after an edit).")
        compound = replay(self.cm, data, self.history)
        compound.text = f"Open recipe {Path(file).name} ({len(compound.commands)} steps)"
        self._changed()
        return self.history.done[-1]

    def export(self, out_dir, force: bool = False, progress=None):
        """The export folder (export_folder); `progress` is told each step and may raise to stop it (nothing is left)."""
        from graphsurgeon.export import export_folder

        # the editor exports what it shows, random weights included; the dialog's notes say so (README.md too)
        result = export_folder(self.cm, out_dir, force=force, random_weights=True, progress=progress)
        if result.weights != "real":
            result.notes.insert(0, f"the weights are {'RANDOM' if result.weights == 'random' else 'partly random'}: "
                                   f"{result.weights_note}; this is no trained model.")
        self.dirty = False
        return result

    # ---- autosave ----------------------------------------------------------------------------
    def recover(self, data: dict) -> Entry:
        """Replay an autosave of this model (`pending_recovery`) onto it as one undoable edit."""
        from graphsurgeon.surgery.recipe import replay

        replay(self.cm, data["recipe"], self.history)
        self._changed()
        return self.history.done[-1]

    def autosave(self) -> Path | None:
        """Write the model's identity + recipe atomically (temp file + os.replace); None for an unnamed model."""
        path = autosave_path(self.cm)
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**model_identity(self.cm), "model_class": self.cm.model_class, "recipe": self.recipe()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autosave-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        return path

    def clear_autosave(self) -> None:
        """On a clean close: nothing to recover for this model."""
        self._autosave_due = False
        path = autosave_path(self.cm)
        if path is not None:
            path.unlink(missing_ok=True)
