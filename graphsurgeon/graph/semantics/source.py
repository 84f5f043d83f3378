"""Where each op came from in the model's source: torch.export's ``stack_trace`` read back as frames.

torch.export keeps, per node, the frames of every module ``forward`` the op ran under and the source
line in each (``query_states = self.q_proj(hidden_states).view(...)``); frames of plain functions the
model calls (``create_causal_mask``, ``apply_rotary_pos_emb``) are not kept, so an op inside one shows the
calling line. A decorator that turns such a function into a module (the `kernels` package's
``use_kernel_forward_from_hub``, which transformers ≥ 5.25 applies to ``apply_rotary_pos_emb``) adds a
``forward`` frame that only passes its call on (``return func(*args, **kwargs)``); such frames say nothing of
the model and are dropped, so the op still shows the model's calling line. A *statement* is one such line in one module: its ops, the names its left-hand side
assigns, and the function it calls, if any. Where the line alone cannot say (a call's arguments spread over
several lines, the names a forward returns), the file the frame names is read back with `ast`; a file that is
gone or does not parse says nothing.
"""

from __future__ import annotations

import ast
import keyword
import linecache
import re
from dataclasses import dataclass, field
from functools import lru_cache

import torch.fx

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n[ \t]*([^\n]*)')
_IDENT = r"[A-Za-z_]\w*"
# a frame that only passes its call on: `return func(*args, **kwargs)` (a decorator's module wrapping a function)
_PASS_THROUGH = re.compile(rf"^return\s+{_IDENT}(?:\.{_IDENT})*\(\*{_IDENT},\s*\*\*{_IDENT}\)$")
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
    code: str  # the source line, stripped (a statement over several lines: its first line)
    own: str = field(default="", compare=False)  # the line the op itself is on (a size's attribute is read there)


@lru_cache(maxsize=8192)
def parse_frames(stack_trace: str) -> tuple[Frame, ...]:
    """The frames of a stack trace, outermost first, without frames that only pass their call on. A line inside a
    statement over several lines stands for the statement: its first line and code (StableLM's
    `query_rot, query_pass = (` for an op on the line `query_states[..., : self.rotary_ndims],`)."""
    frames = []
    for file, n, fn, code in _FRAME.findall(stack_trace or ""):
        line, first = _statement_starts(file).get(int(n), (int(n), code.strip()))
        frames.append(Frame(file, line, fn, first, code.strip()))
    return tuple(f for f in frames if not _PASS_THROUGH.match(f.own))


@lru_cache(maxsize=1024)
def function_source(file: str, name: str | None) -> str:
    """The source of the module-level function `name` defined in `file` ("" when there is none): what a call of a
    plain function runs, whose own frames the capture loses."""
    tree = _parsed(file) if name else None
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None) if tree else None
    if node is None:
        return ""
    return "\n".join(linecache.getline(file, i).rstrip("\n") for i in range(node.lineno, (node.end_lineno or 0) + 1))


def statement_text(frame: Frame) -> str:
    """The whole statement `frame` is in, its lines joined (one line when it is on one)."""
    end = _statement_spans(frame.file).get(frame.line, frame.line)
    if end == frame.line:
        return frame.own or frame.code
    return " ".join(linecache.getline(frame.file, n).strip() for n in range(frame.line, end + 1))


@lru_cache(maxsize=64)
def _statement_spans(file: str) -> dict[int, int]:
    """first line -> last line of every simple statement over several lines (but a dict or list literal's: each entry
    is read on its own line — Gemma's `causal_mask_mapping = {`)."""
    tree = _parsed(file)
    if tree is None:
        return {}
    return {node.lineno: node.end_lineno for node in ast.walk(tree)
            if isinstance(node, ast.stmt) and not hasattr(node, "body") and (node.end_lineno or 0) > node.lineno
            and not isinstance(getattr(node, "value", None), (ast.Dict, ast.List))}


@lru_cache(maxsize=64)
def _statement_starts(file: str) -> dict[int, tuple[int, str]]:
    """line -> (first line, its code) for every line after the first of a statement over several lines."""
    out: dict[int, tuple[int, str]] = {}
    for first, last in _statement_spans(file).items():
        for n in range(first + 1, last + 1):
            out.setdefault(n, (first, linecache.getline(file, first).strip()))
    return out


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


@lru_cache(maxsize=64)
def _parsed(file: str) -> ast.Module | None:
    try:
        with open(file, encoding="utf-8") as f:
            return ast.parse(f.read())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


@lru_cache(maxsize=64)
def _index(file: str) -> tuple[dict[int, list[ast.Call]], list[ast.FunctionDef | ast.AsyncFunctionDef]] | None:
    """({line: the calls starting there}, every function) of `file`, each in ast.walk order: one walk per file
    instead of one per question (a model's file is asked about dozens of lines)."""
    tree = _parsed(file)
    if tree is None:
        return None
    calls: dict[int, list[ast.Call]] = {}
    functions = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            calls.setdefault(node.lineno, []).append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(node)
    return calls, functions


def _name(expr: ast.expr) -> str | None:
    return expr.id if isinstance(expr, ast.Name) else None


@lru_cache(maxsize=8192)
def def_parameters(file: str, line: int) -> tuple[str, ...]:
    """The parameters of the function around `line` of `file` (`self`, *args and **kwargs left out)."""
    around = _function_around(file, line)
    if around is None:
        return ()
    a = around.args
    return tuple(p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self")


@lru_cache(maxsize=8192)
def required_parameters(file: str, line: int) -> tuple[str, ...]:
    """The parameters of the function around `line` that have no default (`self` left out)."""
    around = _function_around(file, line)
    if around is None:
        return ()
    a = around.args
    positional = a.posonlyargs + a.args
    with_default = {p.arg for p in positional[len(positional) - len(a.defaults):]} if a.defaults else set()
    with_default |= {p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None}
    return tuple(p.arg for p in positional + a.kwonlyargs if p.arg != "self" and p.arg not in with_default)


@lru_cache(maxsize=8192)
def call_binding(file: str, line: int, callee: str, params: tuple[str, ...], loose: bool = False) -> dict[str, str]:
    """{name the caller passes: the callee's parameter it binds} for the call starting on `line` that calls
    `callee` (a submodule's attribute; with `loose`, the line's only call of a plain name: a loop variable):
    positional arguments bind `params` in order, keywords by name. Names bound twice are left out; a call with
    one argument also binds "" (whatever expression it passes) to that parameter."""
    call = _call_at(file, line, callee, loose)
    if call is None:
        return {}
    args = [a for a in call.args if not (isinstance(a, ast.Name) and a.id == "self")]
    only = {}
    if len(args) + len(call.keywords) == 1 and not isinstance((args or [None])[0], ast.Starred):
        param = params[0] if args and params else call.keywords[0].arg if call.keywords else None
        only = {"": param} if param in params else {}
    pairs = [(_name(a), params[i] if i < len(params) else None)
             for i, a in enumerate(a for a in call.args if not (isinstance(a, ast.Name) and a.id == "self"))
             if not isinstance(a, ast.Starred)]
    pairs += [(_name(k.value), k.arg) for k in call.keywords if k.arg is not None]
    pairs = [(v, p) for v, p in pairs if v and p in params]
    values = [v for v, _ in pairs]
    taken = [p for _, p in pairs]
    return {**only, **{v: p for v, p in pairs if values.count(v) == 1 and taken.count(p) == 1}}


def _call_at(file: str, line: int, callee: str, loose: bool = False) -> ast.Call | None:
    index = _index(file)
    if index is None:
        return None
    calls = index[0].get(line, [])
    named = [c for c in calls if _calls(c.func, callee)]
    if named:
        return named[0]
    own = [c for c in calls if isinstance(c.func, ast.Name) and c.func.id not in _LIBRARY_CALLS]
    return own[0] if loose and len(own) == 1 else None


def _function_around(file: str, line: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    index = _index(file)
    if index is None:
        return None
    around = None
    for node in index[1]:
        if node.lineno <= line <= (node.end_lineno or 0):
            if around is None or node.lineno > around.lineno:
                around = node
    return around


@lru_cache(maxsize=8192)
def call_arguments(file: str, line: int, callee: str) -> tuple[str | None, ...]:
    """The names the call of `callee` starting on `line` of `file` passes, positional first, then keyword values,
    in source order (None for an argument that is not a plain name; `self` and `**kwargs` left out).

    `callee` is what the caller calls: a function name (`attention_interface`) or a submodule's attribute
    (`SelfAttention`, `layer` for `self.layer[0](…)`); () when no such call starts on that line."""
    index = _index(file)
    if index is None:
        return ()
    for node in index[0].get(line, []):
        if not _calls(node.func, callee):
            continue
        args = [_name(a) for a in node.args if not isinstance(a, ast.Starred)]
        args += [_name(k.value) for k in node.keywords if k.arg is not None]
        return tuple(a for a in args if a != "self")
    return ()


def _calls(func: ast.expr, callee: str) -> bool:
    while isinstance(func, ast.Subscript):  # self.layer[0](...)
        func = func.value
    if isinstance(func, ast.Attribute):
        return func.attr == callee
    return isinstance(func, ast.Name) and func.id == callee


@lru_cache(maxsize=8192)
def returned_names(file: str, line: int) -> tuple[str | None, ...]:
    """The names the function around `line` of `file` returns, in order: `return attn_output, position_bias` ->
    ('attn_output', 'position_bias'); None for a part that is not a plain name; () when unknown. Of several
    `return` statements the last one counts (the early ones are usually special cases)."""
    around = _function_around(file, line)
    if around is None:
        return ()
    returns = sorted((r for r in _own_statements(around) if isinstance(r, ast.Return) and r.value is not None),
                     key=lambda r: r.lineno)
    if not returns:
        return ()
    value = returns[-1].value
    parts = value.elts if isinstance(value, (ast.Tuple, ast.List)) else [value]
    return tuple(_name(p) for p in parts)


def _own_statements(func: ast.AST) -> list[ast.AST]:
    """The nodes of a function body, nested functions and classes left out."""
    out, todo = [], list(ast.iter_child_nodes(func))
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        out.append(node)
        todo += list(ast.iter_child_nodes(node))
    return out
