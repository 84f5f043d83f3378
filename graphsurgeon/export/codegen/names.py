"""The code generator's one window on the semantic layer (graph/semantics): value names and function groups.

The canvas and model.py must use the same names, so nothing here invents names of its own: until
`cm.semantics()` exists these are stand-ins (the fx name without its counter; a function group is a run of
ops one source line of the model produced by calling a plain function, e.g. ``create_causal_mask(``), and
switching to the semantic layer is a change to this file only.
"""

from __future__ import annotations

import re

import torch.fx

_COUNTER = re.compile(r"_\d+$")
_CALL = re.compile(r"^\s*(?:[\w\s,.\[\]*()]+?=\s*)?(?:return\s+)?(?:self\.)?([A-Za-z_]\w*)\(")
MIN_GROUP_OPS = 4  # a call that produced fewer ops reads better inline


def value_name(cm, node: torch.fx.Node) -> str:
    """Display name of a value (not unique: the writer makes it unique in its function)."""
    sem = _semantics(cm)
    if sem is not None:
        return sem.name(node)
    name = _COUNTER.sub("", node.name)
    return name or "x"


def function_groups(cm) -> dict[str, tuple[str, str, str]]:
    """fx node name -> (group path, function name, call key) for ops a plain function call produced."""
    sem = _semantics(cm)
    if sem is not None:
        out = {}
        for path, group in sem.groups.items():
            for n in group.nodes:
                out[n.name if isinstance(n, torch.fx.Node) else str(n)] = (path, group.function, f"fn:{path}")
        return out
    return _stand_in_groups(cm)


def _semantics(cm):
    fn = getattr(cm, "semantics", None)
    return fn() if callable(fn) else None


def source_frames(node: torch.fx.Node) -> list[tuple[str, str]]:
    """(file:line, code) of each forward frame in the node's stack trace, outermost first."""
    lines = (node.meta.get("stack_trace") or "").splitlines()
    frames = []
    for i, line in enumerate(lines):
        m = re.match(r'\s*File "([^"]+)", line (\d+)', line)
        if m:
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            frames.append((f"{m.group(1)}:{m.group(2)}", code))
    return frames


def _module_key(node: torch.fx.Node) -> tuple[str, str, int]:
    """(innermost call key, module path, depth) of a node."""
    stack = [(k, v[0]) for k, v in (node.meta.get("nn_module_stack") or {}).items()
             if isinstance(v[0], str) and v[0] and not str(k).startswith("_empty")]
    if not stack:
        return "", "", 0
    return stack[-1][0], stack[-1][1], len(stack)


def _stand_in_groups(cm) -> dict[str, tuple[str, str, str]]:
    from graphsurgeon.export.codegen.lift import SKIP, op_key

    runs: list[tuple[tuple, list[torch.fx.Node]]] = []
    for node in cm.gm.graph.nodes:
        if node.op != "call_function" or op_key(node) in SKIP:
            continue
        key, path, depth = _module_key(node)
        frames = source_frames(node)
        if len(frames) <= depth:
            continue
        where, code = frames[depth]
        m = _CALL.match(code)
        if not m or m.group(1) in ("super", "torch", "F", "nn") or f"{path}.{m.group(1)}".lstrip(".") in cm.module_classes:
            # ops after a child module's call on its line (`self.c_attn(x).split(...)`) are the module's own
            runs.append((None, [node]))
            continue
        sig = (key, path, where, m.group(1))
        if runs and runs[-1][0] == sig:
            runs[-1][1].append(node)
        else:
            runs.append((sig, [node]))
    out: dict[str, tuple[str, str, str]] = {}
    seen: dict[str, int] = {}
    for sig, nodes in runs:
        if sig is None or sum(1 for n in nodes if isinstance(n.meta.get("val"), torch.Tensor)) < MIN_GROUP_OPS:
            continue
        key, path, _, function = sig
        gpath = f"{path}.{function}" if path else function
        n = seen.get(gpath, 0)
        seen[gpath] = n + 1
        for node in nodes:
            out[node.name] = (gpath, function, f"fn:{gpath}#{n}")
    return out
