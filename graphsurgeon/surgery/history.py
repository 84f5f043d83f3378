"""Undo/redo over surgery commands, and `add_lora`: Q+V (or any roles) on chosen layers as one edit."""

from __future__ import annotations

from dataclasses import dataclass

from graphsurgeon.surgery.commands import Command, Compound, InsertLoRA, Record
from graphsurgeon.surgery.spec import LoRAConfig


@dataclass
class Entry:
    """One undoable step."""

    command: Command
    record: Record

    @property
    def text(self) -> str:
        return self.command.text


class History:
    """A linear undo stack over one captured model."""

    def __init__(self, cm) -> None:
        self.cm = cm
        self.done: list[Entry] = []
        self.undone: list[Command] = []

    def do(self, command: Command) -> Entry:
        """Apply `command`; a refused command raises and leaves graph and history unchanged."""
        record = command.apply(self.cm)
        entry = Entry(command, record)
        self.done.append(entry)
        self.undone.clear()
        return entry

    def undo(self) -> Record:
        entry = self.done.pop()
        record = entry.command.revert(self.cm)
        self.undone.append(entry.command)
        return record

    def redo(self) -> Record:
        command = self.undone.pop()
        record = command.apply(self.cm)
        self.done.append(Entry(command, record))
        return record

    @property
    def can_undo(self) -> bool:
        return bool(self.done)

    @property
    def can_redo(self) -> bool:
        return bool(self.undone)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.done]


def lora_command(cm, roles=("q", "v"), layers="all", config: LoRAConfig | None = None) -> Compound:
    """The compound command adding a LoRA block on every resolved target (not applied yet)."""
    from graphsurgeon.surgery.targets import per_module, resolve_targets

    config = config or LoRAConfig()
    targets = per_module(resolve_targets(cm, roles, layers))  # each inserted at every call of its module
    text = f"Add LoRA Layer ({'+'.join(r.upper() if len(r) == 1 else r for r in roles)}, r={config.r}) " \
           f"to {len({t.layer for t in targets})} layer(s)"
    return Compound(text, [InsertLoRA(t, config) for t in targets])


def add_lora(cm, roles=("q", "v"), layers="all", config: LoRAConfig | None = None,
             history: History | None = None) -> Entry:
    """Add LoRA on `roles` of `layers` as one undoable edit; uses `history` or a new History(cm)."""
    history = history or History(cm)
    return history.do(lora_command(cm, roles, layers, config))
