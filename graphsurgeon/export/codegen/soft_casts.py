"""No-op casts in model.py's scopes (scopes.py): a `.to(dtype)` that changed nothing at the capture's dtype is kept
where it is written (it matters in bf16), but a reader in another scope reads its input — tracing hands the cast to
every later reader of the tensor (RMSNorm's `x.to(float32)` would otherwise leak out as the residual). Two exceptions:
a cast back to the activations' dtype ("follow") is always itself, and so is an upcast written as a module call's
argument (Beam's `self.act_fn(gate.float())`)."""

from __future__ import annotations

import torch.fx

from graphsurgeon.export.codegen import lift
from graphsurgeon.graph.semantics.source import node_frames
from graphsurgeon.graph.tidy import PRECISION


def soft(emitted: list[torch.fx.Node]) -> dict[torch.fx.Node, torch.fx.Node]:
    """The no-op casts read as their input from other scopes: cast -> its input."""
    return {n: n.args[0] for n in emitted if lift.is_noop_cast(n) and n.meta.get(PRECISION) != "follow"}


def keep_call_arguments(prog) -> None:
    """Once the scopes are known: an upcast passed to a module call is that call's input, not a soft cast."""
    for cast in [c for c in prog.soft if _passed_to_a_call(prog, c)]:
        del prog.soft[cast]


def drop_unread(prog) -> None:
    """A soft cast its own scope never reads goes: only other scopes read it, and they read its input. It reads
    nothing then (else its input would leak out of every scope)."""
    unread = {n for n in prog.soft if n in prog.owner and not prog.users.get(n)}
    for node in unread:
        prog.owner.pop(node).items.remove(node)
    for readers in prog.users.values():
        readers[:] = [u for u in readers if u not in unread]


def _passed_to_a_call(prog, cast: torch.fx.Node) -> bool:
    """An upcast written as the argument of a module call (Beam's `self.act_fn(gate.float())`): every reader runs
    inside a module that its own scope calls on the cast's line. It is that call's input, not a tensor whose later
    readers tracing mixed up with it (as RMSNorm's `x.to(float32)` and the residual): it stays, so bf16 upcasts."""
    owner, frames = prog.owner.get(cast), node_frames(cast)
    readers = list(cast.users)
    if owner is None or not frames or cast.meta.get(PRECISION) != "fixed" or not readers:
        return False
    for reader in readers:
        scope = prog.owner.get(reader)
        while scope is not None and scope is not owner:
            scope = scope.parent
        if scope is None or prog.owner.get(reader) is owner or frames[-1] not in node_frames(reader):
            return False
    return True
