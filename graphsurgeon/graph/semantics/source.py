"""Where each op came from in the model's source: torch.export's ``stack_trace`` read back as frames.

torch.export keeps, per node, the frames of every module ``forward`` the op ran under and the source
line in each (``query_states = self.q_proj(hidden_states).view(...)``); frames of plain functions the
model calls (``create_causal_mask``, ``apply_rotary_pos_emb``) are not kept, so an op inside one shows the
calling line. A *statement* is one such line in one module: its ops, the names its left-hand side
assigns, and the function it calls, if any.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from functools import lru_cache

import torch.fx

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n[ \t]*([^\n]*)')
_IDENT = r"[A-Za-z_]\w*"
_ASSIGN = re.compile(rf"^\s*(\(?\s*{_IDENT}(?:\s*,\s*{_IDENT})*\s*,?\s*\)?)\s*(?::[^=]+)?=(?!=)\s*(.*)$")
_CALL = re.compile(rf"(?<![\w.])(?:self\.)?{_IDENT}\s*\(")
# callees that are tensor library calls or builtins, not the model's own functions
_LIBRARY_CALLS = {"torch", "F", "nn", "math", "int", "float", "len", "tuple", "list", "range", "min", "max", "getattr",
                  "isinstance", "super", "print", "dict", "sum", "abs", "round", "type", "self", "bool", "str"}


@dataclass(frozen=True)
class Frame:
    """One frame of a node's stack trace."""

    file: str
    line: int
    function: str  # "forward" for a module's forward
    code: str  # the source line, stripped


@lru_cache(maxsize=8192)
def parse_frames(stack_trace: str) -> tuple[Frame, ...]:
    """The frames of a stack trace, outermost first."""
    return tuple(Frame(f, int(n), fn, code.strip()) for f, n, fn, code in _FRAME.findall(stack_trace or ""))


def node_frames(node: torch.fx.Node) -> tuple[Frame, ...]:
    return parse_frames(node.meta.get("stack_trace") or "")


_MEMO = "_graphsurgeon_module_paths"  # node.meta key: (the nn_module_stack it was read from, the paths)


def module_paths(node: torch.fx.Node) -> tuple[str, ...]:
    """The module paths the op ran under, outermost first, the root module as ''."""
    stack = node.meta.get("nn_module_stack")
    memo = node.meta.get(_MEMO)
    if memo is not None and memo[0] is stack:
        return memo[1]
    paths = _module_paths(tuple(p for p, _cls in stack.values()) if stack else ())
    node.meta[_MEMO] = (stack, paths)
    return paths


@lru_cache(maxsize=16384)
def _module_paths(stack: tuple) -> tuple[str, ...]:
    out: list[str] = []
    for path in stack:
        if isinstance(path, str) and not path.startswith("_empty") and (not out or out[-1] != path):
            out.append(path)
    if not out or out[0] != "":
        out.insert(0, "")
    return tuple(out)


def scope_frames(node: torch.fx.Node) -> tuple[Frame | None, ...]:
    """For each module the op ran under (module_paths order), the frame of that module's forward.

    Frames of a module's forward are named "forward"; when their count does not match the module stack
    (a forward hidden by a hook, or a trace cut short), only the innermost ones are matched.
    """
    return _scope_frames(len(module_paths(node)), node.meta.get("stack_trace") or "")


@lru_cache(maxsize=16384)
def _scope_frames(depth: int, stack_trace: str) -> tuple[Frame | None, ...]:
    forwards = [f for f in parse_frames(stack_trace) if f.function == "forward"]
    if len(forwards) >= depth:
        return tuple(forwards[len(forwards) - depth:])
    return (None,) * (depth - len(forwards)) + tuple(forwards)


@lru_cache(maxsize=8192)
def assigned_names(code: str) -> tuple[str, ...]:
    """The names a source line assigns: 'q, k, v = self.c_attn(x).split(...)' -> ('q', 'k', 'v'); '_' kept."""
    m = _ASSIGN.match(code)
    if not m:
        return ()
    names = [n.strip() for n in m.group(1).strip("() ").split(",") if n.strip()]
    if any(keyword.iskeyword(n) for n in names):
        return ()
    return tuple(names)


@lru_cache(maxsize=8192)
def called_function(code: str) -> str | None:
    """The model's own function or method a line calls: 'causal_mask = create_causal_mask(' -> 'create_causal_mask',
    'mask = self._create_attention_masks(' -> 'self._create_attention_masks' (which may also be a submodule)."""
    m = _ASSIGN.match(code)
    rhs = m.group(2) if m else code.removeprefix("return ").strip()
    for call in _CALL.finditer(rhs):
        name = call.group(0).rstrip("( ")
        bare = name.removeprefix("self.")
        if bare not in _LIBRARY_CALLS and not keyword.iskeyword(bare):
            return name
    return None
