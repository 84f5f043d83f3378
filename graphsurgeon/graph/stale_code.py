"""Deferred recompilation of a GraphModule after an edit (the editor's edits need only the graph).

``gm.recompile()`` regenerates the module's Python source from its graph and compiles it: ~30–50 ms for
GPT-2 on this machine, i.e. half of an editor drop. Nothing on the editor's path reads that source: views,
semantics, validation and model.py read ``gm.graph``. So an edit only marks the code stale
(`recompile_later`); the first thing that needs it — running the module (``gm(...)``, ``forward``),
reading ``gm.code`` or ``str(gm)`` — regenerates it once (`compile_now`), so no caller can see stale code.

fx gives every GraphModule instance its own class (``GraphModuleImpl``); the stale markers live on that
class, the way ``recompile`` itself installs ``forward`` there.
"""

from __future__ import annotations

import torch.fx

_STALE = "_graphsurgeon_code_stale"
_WRAPPED = ("forward", "code", "__str__")  # what a stale module answers by compiling first


def is_stale(gm: torch.fx.GraphModule) -> bool:
    """True when `gm`'s Python code is older than its graph (marked by `recompile_later`)."""
    return bool(type(gm).__dict__.get(_STALE))


def recompile_later(gm: torch.fx.GraphModule) -> None:
    """Mark `gm`'s generated code stale: it is regenerated the first time it is needed."""
    cls = type(gm)
    if cls.__dict__.get(_STALE):
        return
    if not cls.__qualname__.endswith("GraphModuleImpl"):  # not a per-instance class: compile now
        gm.recompile()
        return
    setattr(cls, _STALE, True)
    cls.forward = _stale_forward
    cls.code = property(_stale_code)
    cls.__str__ = _stale_str


def compile_now(gm: torch.fx.GraphModule) -> None:
    """Regenerate `gm`'s code if an edit left it stale (a no-op otherwise)."""
    cls = type(gm)
    if not cls.__dict__.get(_STALE):
        return
    for name in (_STALE, "code", "__str__"):
        delattr(cls, name)  # `forward` is replaced by recompile itself
    gm.recompile()


def _stale_forward(self, *args, **kwargs):
    compile_now(self)
    return type(self).forward(self, *args, **kwargs)  # the generated forward (hooks already ran once)


def _stale_code(self) -> str:
    compile_now(self)
    return self.code


def _stale_str(self) -> str:
    compile_now(self)
    return str(self)
