"""Captures made once per test session and handed out as deep copies.

A copy equals a new capture (graph, code, weights, example inputs, and torch's global random state right after it),
is safe to edit, and is never the kept capture itself, so one test's edits cannot reach another. A capture of a tiny
model is ~1.5 s of torch.export; a copy ~0.05 s. Tests of capture itself (and captures with options) call
`graphsurgeon.capture.capture`.
"""

from __future__ import annotations

import copy
import types
from typing import Callable, Hashable

import torch

_KEPT: dict[Hashable, tuple] = {}  # key -> (the capture, never handed out; torch's random state right after it)


def copy_of(key: Hashable, make: Callable):
    """A deep copy of what `make()` returned the first time `key` was asked for; torch's global random state is set
    to the one `make()` left, so a test that draws random numbers next draws what it drew after a real capture."""
    if key not in _KEPT:
        made = make()
        _KEPT[key] = made, torch.get_rng_state()
    made, state = _KEPT[key]
    torch.set_rng_state(state)
    copied = copy.deepcopy(made)
    _exported_attributes(made.gm, copied.gm)
    return copied


def _exported_attributes(gm: torch.fx.GraphModule, copied: torch.fx.GraphModule) -> None:
    """What torch.export's module() sets on the instance and GraphModule's deepcopy drops (its train()/eval() that
    refuse, range_constraints, validate_inputs): set on the copy too, methods bound to the copy."""
    for name, value in vars(gm).items():
        if name in vars(copied):
            continue
        if isinstance(value, types.MethodType) and value.__self__ is gm:
            value = types.MethodType(value.__func__, copied)
        else:
            value = copy.deepcopy(value)
        setattr(copied, name, value)


def captured(name: str):
    """The preset `name` as `capture(name)` gives it (a copy: edit freely)."""
    from graphsurgeon.capture import capture

    return copy_of(("preset", name), lambda: capture(name))
