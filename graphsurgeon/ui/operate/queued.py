"""Drops accepted while only a model's preview is shown: queued, drawn on their blocks, applied when the capture is in.

A cold launch paints the model's module tree (or its cached views) in about a second; torch.export needs seconds
more. Meanwhile a LoRA dragged from the palette may be dropped on any Linear / Conv1D module the preview shows (the
snapshot's `projections`): the drop is queued, its block carries the badge "LoRA r=8 α=16 · queued", and the History
lists it (Ctrl-Z takes it back: the queue has an undo stack of its own, active in the window's undo group while
drops are queued, so the History of a model shown before is never touched). When the capture is in, each queued drop becomes the edit it stands for
(EditSession.drop_on_module: the projection's whole output, on every layer when asked) with the checks of any drop;
one the captured graph refuses is named in the status bar and changes nothing. A cancelled, failed or replaced open
discards the queue and says so. Slices of a fused projection (GPT-2's q / v of c_attn) are dataflow: they take drops
once the capture is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtGui import QUndoCommand, QUndoStack

if TYPE_CHECKING:
    from graphsurgeon.surgery.spec import LoRAConfig

WHY_NOT = ("before the capture is in, a LoRA goes on a Linear/Conv1D module (highlighted); q/v slices of a fused "
           "projection and other values take drops when the capture is in.")


@dataclass(frozen=True)
class QueuedDrop:
    module: str  # the projection's module path
    kind: str  # the palette block: "add_lora" or "lora" (bare)
    config: LoRAConfig
    every_layer: bool

    @property
    def text(self) -> str:
        what = "bare LoRA Layer" if self.kind == "lora" else "LoRA Layer"
        where = f"{self.module}, on every layer" if self.every_layer else self.module
        return f"Add {what} (r={self.config.r}) on {where} · queued until the capture is in"


class _Queued(QUndoCommand):
    """One queued drop in the History: undo takes it out of the queue, redo puts it back."""

    def __init__(self, queue: "DropQueue", drop: QueuedDrop) -> None:
        super().__init__(drop.text)
        self.queue, self.drop, self._first = queue, drop, True

    def redo(self) -> None:
        if self._first:
            self._first = False
            return
        self.queue.drops.append(self.drop)
        self.queue.shown()

    def undo(self) -> None:
        if self.drop in self.queue.drops:
            self.queue.drops.remove(self.drop)
        self.queue.shown()


class DropQueue:
    """The queued drops of one MainWindow's open in progress (part of window_ops.Operate)."""

    def __init__(self, ops) -> None:
        self.ops = ops
        self.window = ops.window
        self.drops: list[QueuedDrop] = []
        self.source = ""  # the model the queued drops were made on
        self.stack = QUndoStack(ops)
        self._targets: dict[str, str] = {}  # of the drag in progress

    def accepts(self) -> bool:
        """A preview whose projections are known is shown while its capture runs: drops are queued."""
        c = self.window.controller
        return (c.cm is None and c.preview is not None and bool(c.preview.projections) and self.window.opener.active
                and not self.ops.export_task.running)

    def targets(self) -> dict[str, str]:
        """Block id → module path of the projections in the view shown."""
        c = self.window.controller
        return {b.id: b.module_path for b in c.view.blocks
                if b.kind == "composite" and b.module_path in c.preview.projections}

    def drag_entered(self) -> None:
        self._targets = self.targets()
        self.window.scene.show_targets({i: "" for i in self._targets})

    def drag_moved(self, hit: str | None, at) -> None:
        if hit is None or hit in self._targets:
            self.window.scene.hover(hit, "", at)
            self.ops.say(f"drop: LoRA on {self._targets[hit]}, applied when the capture is in" if hit else "")
            return
        self.window.scene.hover(hit, WHY_NOT, at)
        self.ops.say(f"not here: {WHY_NOT}")

    def add(self, id: str | None, kind: str, config: LoRAConfig, every_layer: bool) -> bool:
        """Queue a drop on block `id` of the preview; a refusal says why. True when queued."""
        module = self.targets().get(id) if id is not None else None
        if module is None:
            self.ops.say(f"not here: {WHY_NOT}")
            return False
        c = self.window.controller
        if c.preview.source_name != self.source:
            self.drops, self.source = [], c.preview.source_name
            self.stack.clear()
        drop = QueuedDrop(module, kind, config, every_layer)
        self.drops.append(drop)
        self.stack.push(_Queued(self, drop))
        self.stack.setActive(True)
        self.shown()
        self.ops.say(drop.text)
        return True

    def shown(self) -> None:
        """Badges on the queued blocks, repainted."""
        self.window.controller.queued = {d.module: f"LoRA r={d.config.r} α={d.config.alpha:g} · queued"
                                         for d in self.drops}
        if self.window.controller.shown is not None:
            self.window.refresh(fit=False)

    def _close(self) -> list[QueuedDrop]:
        drops, self.drops = self.drops, []
        self.window.controller.queued = {}
        self.stack.clear()
        self.ops.stack.setActive(True)
        return drops

    def apply(self) -> None:
        """The capture is in: each queued drop becomes its edit (one History entry each); refusals are named."""
        drops = self._close()
        cm = self.window.controller.cm
        if not drops or cm is None:
            return
        if cm.source_name != self.source:
            self.ops.say(f"{len(drops)} queued drop(s) on {self.source} discarded: another model was opened.")
            return
        session = self.ops.session  # a new session for the captured model; its History starts empty
        refused = []
        for d in drops:
            if not self.ops.run_edit(lambda d=d: session.drop_on_module(d.module, d.kind, d.config, d.every_layer)):
                refused.append(f"{d.module}: {self.ops.last_message}")
        done = len(drops) - len(refused)
        text = f"the capture is in: {done} of {len(drops)} queued drop(s) applied"
        self.ops.say(text + (f"; not applied — {'; '.join(refused)}" if refused else "."))

    def discard(self, why: str) -> None:
        """The open ended without a capture (cancelled, failed, replaced): the queue goes, and the History with it."""
        drops = self._close()
        if drops:
            before = self.window.statusBar().currentMessage()
            self.ops.say(f"{before + '; ' if before else ''}{len(drops)} queued drop(s) discarded: {why}.")
