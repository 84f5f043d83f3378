"""Edits as small command objects: `apply(cm)` and `revert(cm)` each return a record of what changed.

Commands are Qt-free; the editor wraps them in QUndoCommand. Weights are kept across revert/apply,
so redo gives back exactly the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from graphsurgeon.surgery.lora import (batched, block_path, connect_lora, disconnect_lora, first_call, insert_lora,
                                      lora_calls, reinsert, remove_lora)
from graphsurgeon.surgery.spec import LoRAConfig, Target


@dataclass
class Record:
    """What one apply/revert changed."""

    added: list[str] = field(default_factory=list)  # LoRA block paths inserted
    removed: list[str] = field(default_factory=list)  # LoRA block paths removed
    changed: list[str] = field(default_factory=list)  # LoRA block paths whose config changed

    def merge(self, other: "Record") -> "Record":
        return Record(self.added + other.added, self.removed + other.removed, self.changed + other.changed)


class Command:
    """Base: a readable `text`, `apply`, `revert`."""

    text: str = ""

    def apply(self, cm) -> Record:  # pragma: no cover - interface
        raise NotImplementedError

    def revert(self, cm) -> Record:  # pragma: no cover - interface
        raise NotImplementedError

    def to_json(self) -> list[dict]:
        """Recipe steps for this command (targets by role and layer, hyper-parameters)."""
        return []


def _describe(target: Target, config: LoRAConfig) -> str:
    where = target.attention or target.module
    return f"{where} {target.role}, r={config.r}"


def every_call_text(target: Target, calls: int, done: str = "added") -> str:
    """The sentence an edit of a LoRA on a module that runs more than once adds to its text ("" when it runs once)."""
    if calls < 2:
        return ""
    leaf = target.module.rsplit(".", 1)[-1]
    where = "both calls" if calls == 2 else f"all {calls} calls"
    return f" — {leaf} runs {calls} times per forward: LoRA {done} at {where} — one adapter, as PEFT and merged " \
           "weights apply it"


class InsertLoRA(Command):
    """Add one LoRA block on `target`: an Add LoRA Layer, or with bare=True the LoRA Layer alone (unconnected)."""

    def __init__(self, target: Target, config: LoRAConfig, bare: bool = False) -> None:
        self.target, self.config, self.bare = target, config, bare
        self.path = block_path(target)
        self.weights: tuple[torch.Tensor, torch.Tensor] | None = None  # kept by revert for redo
        self.text = f"Add {'bare LoRA Layer' if bare else 'LoRA Layer'} to {_describe(target, config)}"

    def apply(self, cm) -> Record:
        insert_lora(cm, self.target, self.config, weights=self.weights, bare=self.bare)
        if not self.bare:  # inserted at every call of its module: said in the edit's text (status bar, undo list)
            self.text = self.text.split(" — ")[0] + every_call_text(self.target, lora_calls(cm, self.path))
        return Record(added=[self.path])

    def revert(self, cm) -> Record:
        self.weights = remove_lora(cm, self.path)
        return Record(removed=[self.path])

    def to_json(self) -> list[dict]:
        return [{"op": "insert_bare" if self.bare else "insert", "role": self.target.role, "layer": self.target.layer,
                 "module": self.target.module, "config": self.config.as_dict()}]


class ConnectLoRA(Command):
    """Wire a bare LoRA Layer: add its output onto the value `onto` (an fx node name)."""

    def __init__(self, cm, path: str, onto: str) -> None:
        block = cm.loras.get(path)
        if block is None:
            from graphsurgeon.errors import GraphsurgeonError

            raise GraphsurgeonError(f"there is no LoRA block at {path!r}; existing: {', '.join(cm.loras) or 'none'}.")
        self.path, self.onto, self.target = path, onto, block.target
        self.text = f"Connect {path} onto {onto}"

    def apply(self, cm) -> Record:
        connect_lora(cm, self.path, self.onto)
        return Record(changed=[self.path])

    def revert(self, cm) -> Record:
        disconnect_lora(cm, self.path)
        return Record(changed=[self.path])

    def to_json(self) -> list[dict]:
        t = self.target
        return [{"op": "connect", "role": t.role, "layer": t.layer, "module": t.module, "onto": self.onto}]


class RemoveLoRA(Command):
    """Remove the LoRA block at `path`."""

    def __init__(self, cm, path: str) -> None:
        self.block = cm.loras[path] if path in cm.loras else None
        if self.block is None:
            from graphsurgeon.errors import GraphsurgeonError

            raise GraphsurgeonError(f"there is no LoRA block at {path!r}; existing: {', '.join(cm.loras) or 'none'}.")
        self.path = path
        self.block = first_call(cm, path)  # removed at every call of its module; inserted again from its first call
        self.weights: tuple[torch.Tensor, torch.Tensor] | None = None
        self.text = f"Remove LoRA Layer from {_describe(self.block.target, self.block.config)}" + \
            every_call_text(self.block.target, lora_calls(cm, path), "removed")

    def apply(self, cm) -> Record:
        self.weights = remove_lora(cm, self.path)
        return Record(removed=[self.path])

    def revert(self, cm) -> Record:
        reinsert(cm, self.block, self.block.config, self.weights)
        return Record(added=[self.path])

    def to_json(self) -> list[dict]:
        t = self.block.target
        return [{"op": "remove", "role": t.role, "layer": t.layer, "module": t.module}]


class ChangeLoRA(Command):
    """Change r / alpha / dropout / rslora of a block; a new r re-creates A and B with fresh init."""

    def __init__(self, cm, path: str, **changes) -> None:
        block = cm.loras.get(path)
        if block is None:
            from graphsurgeon.errors import GraphsurgeonError

            raise GraphsurgeonError(f"there is no LoRA block at {path!r}; existing: {', '.join(cm.loras) or 'none'}.")
        self.path, self.target, self.block = path, block.target, block
        self.old, self.new = block.config, replace(block.config, **changes)
        self.old_weights: tuple[torch.Tensor, torch.Tensor] | None = None
        self.new_weights: tuple[torch.Tensor, torch.Tensor] | None = None
        what = ", ".join(f"{k}={v}" for k, v in changes.items())
        self.text = f"Change LoRA Layer of {_describe(block.target, block.config)}: {what}"

    def apply(self, cm) -> Record:
        from graphsurgeon.validate.local import check_insertion
        from graphsurgeon.validate.diagnostics import ValidationError

        others = {k: v for k, v in cm.loras.items() if k != self.path}
        saved, cm.loras = cm.loras, others  # check the new config as if the block were not there
        try:
            problems = check_insertion(cm, self.target, self.new)
        finally:
            cm.loras = saved
        if problems:
            raise ValidationError(problems)
        self.block = first_call(cm, self.path)  # its current kind and connection are kept, at every call
        self.old_weights = remove_lora(cm, self.path)
        weights = self.new_weights
        if weights is None and self.new.r == self.old.r:
            weights = self.old_weights
        reinsert(cm, self.block, self.new, weights)
        return Record(changed=[self.path])

    def revert(self, cm) -> Record:
        self.block = first_call(cm, self.path)
        self.new_weights = remove_lora(cm, self.path)
        reinsert(cm, self.block, self.old, self.old_weights)
        return Record(changed=[self.path])

    def to_json(self) -> list[dict]:
        t = self.target
        return [{"op": "change", "role": t.role, "layer": t.layer, "module": t.module, "config": self.new.as_dict()}]


class Compound(Command):
    """Several commands as one edit (one undo): "Q+V on every layer"."""

    def __init__(self, text: str, commands: list[Command]) -> None:
        self.text, self.commands = text, list(commands)

    def apply(self, cm) -> Record:
        record, done = Record(), []
        with batched(cm):  # one recompile for the whole edit
            try:
                for c in self.commands:
                    record = record.merge(c.apply(cm))
                    done.append(c)
            except Exception:
                for c in reversed(done):  # all or nothing: a refused part undoes the parts already applied
                    c.revert(cm)
                raise
        return record

    def revert(self, cm) -> Record:
        record = Record()
        with batched(cm):
            for c in reversed(self.commands):
                record = record.merge(c.revert(cm))
        return record

    def to_json(self) -> list[dict]:
        return [step for c in self.commands for step in c.to_json()]
