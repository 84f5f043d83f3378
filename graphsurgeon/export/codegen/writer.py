"""The text of one scope as a function body: names, one statement per source line, shape comments, loops.

Statements are the scope's ops (lifted by `lift`) and the calls of its child scopes, in graph order. A value
read once, by the next statement, that the model's source computed on the same line is written inside that
statement (`q, k, v = self.c_attn(x).split(64, dim=2)`), as long as the line stays short; every other value
gets a name (from `names`), reused when the value it named is dead (`hidden_states = self.ln_1(hidden_states)`).
Sizes are read from the inputs' shapes (`batch, seq = input_ids.shape`); runs of alike layers of a ModuleList
that feed each other become one `for` loop. `canonical=True` writes positional names, so two module calls
compare equal when their code is the same whatever their values are called.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

import torch
import torch.fx

from graphsurgeon.export.codegen import lift, names
from graphsurgeon.export.codegen.scopes import Program, Scope, is_symbolic, owns, reads

LIMIT = 96  # the longest expression written by folding values into their reader
RESERVED = set(keyword.kwlist) | {"self", "torch", "nn", "F", "math", "training", "float", "int", "len", "range",
                                  "input", "type", "list", "tuple", "dict", "min", "max", "sum", "layer", "os"}


@dataclass
class Line:
    text: str
    depth: int = 0  # extra indentation (loop bodies)
    blocks: tuple = ()  # ids of the canvas blocks the line writes ("m:<path>", "n:<fx node>")
    optional: str | None = None  # LoRA module (attribute path): a line only the layers with that LoRA have
    anchor: int = 0  # statements without `optional` written before it (where merged classes put it)
    comment: str = ""  # the shape comment (kept apart: layers of one class may differ in sizes)

    @property
    def full(self) -> str:
        return f"{self.text}  # {self.comment}" if self.comment else self.text


@dataclass
class Body:
    params: list[str]  # parameter names after self
    lines: list[Line]
    returns: list[str]  # returned expressions, in output order
    training: bool = False  # a function that needs `training` (it has a dropout)
    sizes: list[str] = field(default_factory=list)


@dataclass
class Stmt:
    values: list  # values it defines (None for a tuple slot nobody reads)
    node: torch.fx.Node | None = None  # an op
    scope: Scope | None = None  # a child scope it calls
    loop: list | None = None  # alike layers called in a for loop
    line: str | None = None  # source position (values on the same line fold into one statement)
    optional: str | None = None
    lora_onto: torch.fx.Node | None = None  # a LoRA add: the value it adds onto (keeps its name)


class Env:
    """What a writer needs to know about the rest of the program (set by classes.py)."""

    def __init__(self, prog: Program, lists: set[str]) -> None:
        self.prog, self.lists = prog, lists
        self.class_names: dict[str, str] = {}  # scope key -> class name
        self.function_names: dict[str, str] = {}  # scope key -> function name
        self.training: dict[str, bool] = {}  # function scope key -> needs `training`
        self.leaves: dict[str, object] = {}  # scope key -> Leaf

    def attr(self, base: str, path: str) -> str:
        """`self.h[0].attn` for module `path` seen from a class at `base`."""
        rel = path[len(base) + 1:] if base else path
        out, seen = "self", base
        for part in rel.split("."):
            out += f"[{part}]" if seen in self.lists and part.isdigit() else f".{part}"
            seen = f"{seen}.{part}" if seen else part
        return out


def scope_depth(scope: Scope) -> int:
    d, s = 0, scope
    while s is not None:
        d += s.kind == "module"
        s = s.parent
    return d


def module_of(scope: Scope) -> Scope:
    while scope.kind not in ("module", "root"):
        scope = scope.parent
    return scope


class FunctionWriter:
    def __init__(self, env: Env, scope: Scope, canonical: bool = False) -> None:
        self.env, self.prog, self.scope, self.canonical = env, env.prog, scope, canonical
        self.dims = self.prog.cm.dims
        self.depth = scope_depth(module_of(scope))
        self.stmts = self._loops(self._statements())
        self.index: dict = {}  # node inside the scope -> index of the statement that computes / calls it
        for i, st in enumerate(self.stmts):
            for n in _stmt_nodes(st):
                self.index[n] = i
        self.pinned: set = set()  # values that must have a name
        self.folded: dict = {}  # value -> lift.Expr written inside its reader
        self.bound: dict[str, object] = {}
        self.name_of: dict = {}
        self.sizes: dict[str, str] = {}
        self.lines: list[Line] = []
        self.count = 0
        self.at = 0  # statement being written
        self.pending: tuple = ()  # canvas blocks of values folded into the next statement
        self.adds_onto = {st.lora_onto: st.node for st in self.stmts if st.lora_onto is not None}

    # ---- statements ------------------------------------------------------------------------
    def _statements(self) -> list[Stmt]:
        out: list[Stmt] = []
        adds = {b.add_node: b for b in self.prog.cm.loras.values() if b.add_node}
        for item in self.scope.items:
            if isinstance(item, Scope):
                if not item.outputs:
                    continue
                first = item.nodes()[0]
                opt = self._optional(item.lora) if item.kind == "lora" else None
                out.append(Stmt(list(item.outputs), scope=item, line=self._line(first), optional=opt))
                continue
            node = item
            if node.target is getattr(__import__("operator"), "getitem") and self.prog.owner.get(node.args[0]) is self.scope:
                continue
            val = node.meta.get("val")
            values = [node]
            if isinstance(val, (list, tuple)):
                slots = {u.args[1]: u for u in self.prog.users.get(node, []) if u in self.prog.owner}
                values = [slots.get(i) for i in range(len(val))]
            st = Stmt(values, node=node, line=self._line(node))
            block = adds.get(node.name)
            if block is not None and block.onto and any(s.kind == "lora" and s.lora is block for s in _kids(self.scope)):
                st.optional, st.lora_onto = self._optional(block), self.prog.rep(_node(self.prog, block.onto))
            out.append(st)
        return out

    def _optional(self, block) -> str:
        from graphsurgeon.export.codegen.scopes import lora_export_name

        path = lora_export_name(block)
        base = module_of(self.scope).path
        return path[len(base) + 1:] if base else path

    def _line(self, node: torch.fx.Node) -> str | None:
        frames = names.source_frames(node)
        return (frames[self.depth][0] or None) if len(frames) > self.depth else None

    def _loops(self, stmts: list[Stmt]) -> list[Stmt]:
        """Calls of consecutive alike layers of one ModuleList, each fed by the one before: one `for` loop."""
        out: list[Stmt] = []
        i = 0
        while i < len(stmts):
            j = i + 1
            pattern = self._link(stmts[i], stmts[i + 1]) if i + 1 < len(stmts) else None
            while pattern is not None and j < len(stmts) and self._link(stmts[j - 1], stmts[j]) == pattern:
                j += 1
            if j - i >= 2:
                scopes = [s.scope for s in stmts[i:j]]
                out.append(Stmt(list(scopes[-1].outputs), loop=scopes, line=stmts[i].line))
                i = j
            else:
                out.append(stmts[i])
                i += 1
        return out

    def _link(self, a: Stmt, b: Stmt):
        """How b's inputs come from a (see `_carry`) when b calls the next alike layer after a; else None."""
        if a.scope is None or b.scope is None or a.scope.kind != "module" or b.scope.kind != "module":
            return None
        (pa, _, ia), (pb, _, ib) = a.scope.path.rpartition("."), b.scope.path.rpartition(".")
        if pa != pb or pa not in self.env.lists or not (ia.isdigit() and ib.isdigit()) or int(ib) != int(ia) + 1:
            return None
        cls = self.env.class_names.get(a.scope.key)
        if cls is None or cls != self.env.class_names.get(b.scope.key):
            return None
        if len(a.scope.inputs) != len(b.scope.inputs) or len(a.scope.outputs) != len(b.scope.outputs):
            return None
        inside_b = set(b.scope.nodes())
        for o in a.scope.outputs:
            if any(u not in inside_b for u in self.prog.users.get(o, [])):
                return None
        carry = _carry(a.scope, b.scope)
        return tuple(carry) if carry else None

    # ---- writing ---------------------------------------------------------------------------------
    def write(self, params: list[torch.fx.Node] | None = None, fixed: list[str] | None = None) -> Body:
        """The body; `params` (default: the scope's inputs) named `fixed` when given (the model's inputs)."""
        params = self.scope.inputs if params is None else params
        self._pin()
        plist = []
        self.at = -1  # parameters never share a name
        if self.canonical:
            fixed = None
        for i, p in enumerate(params):
            if fixed is not None:
                self.bound[fixed[i]], self.name_of[p] = p, fixed[i]
                plist.append(fixed[i])
                continue
            plist.append(self._take(p, "a" if self.canonical else self._want(p)))
        for key in self.scope.sizes:
            self.sizes[key] = self._size_name(key)
            plist.append(self.sizes[key])
        training = self.scope.kind == "function" and self._needs_training()
        self._size_lines(params)
        base_count = 0
        for i, st in enumerate(self.stmts):
            self.at = i
            before = len(self.lines)
            self._emit(st)
            for ln in self.lines[before:]:
                ln.optional, ln.anchor = st.optional, base_count
            if st.optional is None:
                base_count += 1
        returns = [self.arg(o) for o in self.scope.outputs]
        return Body(plist, self.lines, returns, training)

    def param_names(self) -> list[str]:
        """The names this scope's inputs would get (before sizes), for choosing one name across calls."""
        return [self._sanitize(self._want(p)) for p in self.scope.inputs]

    @staticmethod
    def _sanitize(want: str) -> str:
        return want if want not in RESERVED else f"{want}_"

    def _pin(self) -> None:
        for st in self.stmts:
            if st.loop:
                first = st.loop[0]
                for v in first.inputs:
                    self.pinned.add(v)
            if st.lora_onto is not None:
                self.pinned.add(st.lora_onto)
            if st.scope is not None and st.scope.kind == "lora":
                self.pinned.update(reads_of_scope(self.prog, st.scope))

    def _needs_training(self) -> bool:
        return bool(self.env.training.get(self.scope.key))

    def _want(self, value) -> str:
        if value.graph is not self.prog.cm.gm.graph:  # an optional input the graph does not hold (position_ids)
            return value.name
        value = self.adds_onto.get(value, value)  # a LoRA'd value is called what the sum is called
        name = names.value_name(self.prog.cm, value, module_of(self.scope).path)
        name = re.sub(r"\W", "_", name)
        if not name or name[0].isdigit():
            name = f"v_{name}"
        return name

    def _dead(self, value) -> bool:
        """True when nothing after the current statement reads `value`."""
        if value in self.scope.outputs:
            return False
        for u in self.prog.users.get(value, []):
            if u.op == "output" or self.index.get(u, len(self.stmts)) > self.at:
                return False
        return True

    def _take(self, value, want: str, onto=None) -> str:
        if onto is not None:
            name = self.name_of[onto]
        elif self.canonical:
            name = f"{want}{self.count}"
            self.count += 1
        else:
            base = want if want not in RESERVED and want not in self.sizes.values() else f"{want}_"
            self._keep_residual(base)
            name, k = base, 1
            while name in self.bound and not self._dead(self.bound[name]) or name in self.env.function_names.values():
                k += 1
                name = f"{base}_{k}"
        self.bound[name] = value
        self.name_of[value] = name
        return name

    def _keep_residual(self, name: str) -> None:
        """`residual = hidden_states` before `hidden_states` is rebound while the old value still feeds a residual
        add (as the model's authors write it)."""
        old = self.bound.get(name)
        if self.at < 0 or old is None or self._dead(old) or not isinstance(old, torch.fx.Node) \
                or (name == "residual") or ("residual" in self.bound and not self._dead(self.bound["residual"])):
            return
        sem = self.prog.cm.semantics()
        if any(sem.residual_operand(u) is old for u in self.prog.users.get(old, [])):
            self.lines.append(Line(f"residual = {name}"))
            self.bound["residual"], self.name_of[old] = old, "residual"
            del self.bound[name]

    def _emit(self, st: Stmt) -> None:
        if st.loop:
            self._emit_loop(st)
            return
        expr = self._expr(st)
        blocks = self._blocks(st)
        if self._foldable(st, expr):
            self.folded[st.values[0]] = expr
            self.pending += blocks
            return
        blocks, self.pending = self.pending + blocks, ()
        if st.node is not None and lift.op_key(st.node).endswith("_") and not self.prog.users.get(st.node):
            self.lines.append(Line(expr.text, blocks=blocks))  # an in-place op read by nobody: a statement
            return
        targets = []
        for v in st.values:
            targets.append("_" if v is None else self._take(v, "v" if self.canonical else self._want(v),
                                                           onto=st.lora_onto))
        lhs = ", ".join(targets)
        if len(st.values) == 1 and st.values[0] is not None and isinstance(st.values[0].meta.get("val"), (list, tuple)):
            lhs += ","
        self.lines.append(Line(f"{lhs} = {expr.text}" if targets else expr.text, blocks=blocks, comment=self._comment(st)))

    def _foldable(self, st: Stmt, expr: lift.Expr) -> bool:
        if len(st.values) != 1 or st.values[0] is None or st.optional and st.scope is None:
            return False
        v = st.values[0]
        if v in self.pinned or v in self.scope.outputs or isinstance(v.meta.get("val"), (list, tuple)):
            return False
        users = self.prog.users.get(v, [])
        nxt = self.at + 1
        if not users or any(self.index.get(u) != nxt for u in users) or nxt >= len(self.stmts):
            return False
        reader = self.stmts[nxt]
        if reader.loop or (reader.node is not None and _uses(reader.node, v, self.prog) != 1):
            return False
        if st.scope is not None and st.scope.kind == "lora":
            return reader.lora_onto is not None  # the update is written inside its add
        if reader.scope is not None and reader.scope.kind == "lora":
            return False
        same_line = st.line is not None and st.line == reader.line
        return same_line and len(expr.text) <= LIMIT

    def _blocks(self, st: Stmt) -> tuple:
        if st.scope is not None:
            if st.scope.kind == "lora":
                return (f"m:{st.scope.lora.path}",)
            ids = (f"m:{st.scope.path}",)
            if self.env.leaves.get(st.scope.key) is not None and getattr(self.env.leaves[st.scope.key], "lora", None):
                ids += (f"m:{self.env.leaves[st.scope.key].lora.path}",)
            return ids
        if st.loop:
            run = names.stack_path(self.prog.cm, st.loop[0].path)
            return ((f"m:{run}",) if run else ()) + tuple(f"m:{s.path}" for s in st.loop)
        return (f"n:{st.node.name}",) + tuple(f"n:{v.name}" for v in st.values if v is not None and v is not st.node)

    def _comment(self, st: Stmt) -> str:
        if self.canonical:
            return ""
        metas = []
        for v in st.values:
            val = v.meta.get("val") if v is not None else None
            if isinstance(val, torch.Tensor):
                metas.append(self._shape(val))
        if not metas:
            return ""
        if len(metas) > 1 and len(set(metas)) == 1:
            return f"{len(metas)} × {metas[0]}"
        return ", ".join(metas)

    def _shape(self, val: torch.Tensor) -> str:
        text = "[" + ", ".join(self.dims.text(d) for d in val.shape) + "]"
        dtype = str(val.dtype).removeprefix("torch.")
        return text if dtype == "float32" else f"{text} {dtype}"

    # ---- expressions ---------------------------------------------------------------------------
    def _expr(self, st: Stmt) -> lift.Expr:
        if st.scope is not None:
            return lift.Expr(self._call(st.scope), lift.CALL)
        node = st.node
        if node.op == "call_module":
            return lift.Expr(f"{self.env.attr(module_of(self.scope).path, str(node.target))}"
                             f"({', '.join(self.arg(a) for a in node.args)})", lift.CALL)
        expr = lift.render(self, node)
        if node in self.prog.defaults:  # Hugging Face's default of an optional input: the input when given
            given = self.arg(self.prog.defaults[node])
            expr = lift.Expr(f"{given} if {given} is not None else {expr.text}", 1)
        return expr

    def _call(self, child: Scope) -> str:
        leaf = self.env.leaves.get(child.key)
        base = module_of(self.scope).path
        if child.kind == "function":
            args = [self.arg(a) for a in child.inputs] + [self._sym_key(k) for k in child.sizes]
            if self.env.training.get(child.key):
                args.append(self.training())
            return f"{self.env.function_names[child.key]}({', '.join(args)})"
        callee = self.env.attr(base, child.path)
        if leaf is not None:
            text = f"{callee}({self.arg(leaf.input)})"
            if child.kind == "lora":
                text += self._lora_reshape(child, leaf)
            return text
        args = [self.arg(a) for a in child.inputs] + [self._sym_key(k) for k in child.sizes]
        return f"{callee}({', '.join(args)})"

    def _sym_key(self, key: str) -> str:
        if key not in self.sizes:
            self._late_size(key)
        return self.sizes[key]

    def _lora_reshape(self, child: Scope, leaf) -> str:
        """A LoRA update computed as [..., out]; reshaped when its target has another shape."""
        out = child.outputs[0].meta.get("val")
        x = leaf.input.meta.get("val")
        if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
            return ""
        natural = [self.dims.text(d) for d in x.shape[:-1]] + [str(leaf.lora.target.out_features)]
        if [self.dims.text(d) for d in out.shape] == natural:
            return ""
        return f".reshape({', '.join(self.arg(d) for d in out.shape)})"

    def _emit_loop(self, st: Stmt) -> None:
        scopes = st.loop
        first, last = scopes[0], scopes[-1]
        carry = _carry(first, scopes[1])
        container, _, i0 = first.path.rpartition(".")
        base = module_of(self.scope).path
        seq = self.env.attr(base, container)
        n = len(self.prog.cm.gm.get_submodule(container)._modules) if container else 0
        lo, hi = int(i0), int(last.path.rpartition(".")[2]) + 1
        if (lo, hi) != (0, n):
            seq += f"[{lo}:{hi}]"
        args, targets = [], [None] * len(last.outputs)
        for j, v in enumerate(first.inputs):
            k = next((k for jj, k in carry if jj == j), None)
            if k is None:
                args.append(self.arg(v))
                continue
            name = self.name_of.get(v) or self.arg(v)
            if not self._dead_after_loop(v, first):
                fresh = self._take(object(), self._want(v))
                self.lines.append(Line(f"{fresh} = {name}"))
                name = fresh
            args.append(name)
            targets[k] = name
        args += [self._sym_key(k) for k in first.sizes]
        for k, o in enumerate(last.outputs):
            if targets[k] is None:
                targets[k] = self._take(o, self._want(o))
            else:
                self.bound[targets[k]] = o
                self.name_of[o] = targets[k]
        var = "layer"
        self.lines.append(Line(f"for {var} in {seq}:", blocks=self._blocks(st)))
        self.lines.append(Line(f"{', '.join(targets)} = {var}({', '.join(args)})", depth=1, comment=self._comment(st),
                               blocks=self._blocks(st)))

    def _dead_after_loop(self, v, first: Scope) -> bool:
        inside = set(first.nodes())
        return v not in self.scope.outputs and all(u in inside for u in self.prog.users.get(v, []))

    # ---- lift.Ctx ------------------------------------------------------------------------------
    def arg(self, value, prec: int = 0) -> str:
        if isinstance(value, torch.fx.Node):
            value = self.prog.rep(value, self.scope)
            if value in self.folded:
                e = self.folded.pop(value)
                return e.text if e.prec >= prec else f"({e.text})"
            if value in self.name_of:
                return self.name_of[value]
            if value in self.prog.constants:  # a small constant torch.export lifted out of the code
                return self._literal(self.prog.constants[value])
            if value.op == "get_attr":
                name = owns(module_of(self.scope), self.prog.params[value])
                if name and self.scope.kind != "function":
                    owner, _, leaf = name.rpartition(".")
                    base = module_of(self.scope).path
                    return (self.env.attr(base, owner) if owner != base else "self") + f".{leaf}"
            if is_symbolic(value):
                return self._sym(value.meta["val"], prec)
            raise NotImplementedError(f"model.py codegen: {value.name} is read before it is written")
        if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return self._sym(value, prec)
        if isinstance(value, (list, tuple)):
            inner = ", ".join(self.arg(v) for v in value)
            return f"[{inner}]" if isinstance(value, list) else (f"({inner},)" if len(value) == 1 else f"({inner})")
        if isinstance(value, torch.device):
            return self.device()
        text = lift.constant(value)
        if text is None:
            raise NotImplementedError(f"model.py codegen cannot write the argument {value!r}")
        if prec > lift.UNARY and text.startswith("-"):
            return f"({text})"
        return text

    def _literal(self, t: torch.Tensor) -> str:
        inferred = torch.bool if t.dtype == torch.bool else torch.int64 if not t.is_floating_point() \
            else torch.get_default_dtype()
        dtype = "" if t.dtype == inferred else f", dtype={t.dtype}"
        return f"torch.tensor({t.tolist()!r}{dtype}, device={self.device()})"

    def device(self) -> str:
        for v in self.scope.inputs:
            if isinstance(v.meta.get("val"), torch.Tensor) and v in self.name_of:
                return f"{self.name_of[v]}.device"
        for v, name in self.name_of.items():
            if isinstance(v, torch.fx.Node) and isinstance(v.meta.get("val"), torch.Tensor):
                return f"{name}.device"
        mod = module_of(self.scope)
        if self.scope.kind != "function":
            for p, names_ in self.prog.params.items():
                if owns(mod, names_):
                    return f"{self.arg(p)}.device"
        return "None"

    def training(self) -> str:
        return "training" if self.scope.kind == "function" else "self.training"

    # ---- sizes ---------------------------------------------------------------------------------
    def _size_lines(self, params: list) -> None:
        need: list = []
        for n in self.scope.items:
            if isinstance(n, torch.fx.Node):
                symbols(n, need, self.prog)
            elif self.env.leaves.get(n.key) is None:
                need += [k for k in n.sizes if k not in need]
        for p in params:
            val = p.meta.get("val")
            if not isinstance(val, torch.Tensor) or p not in self.name_of:
                continue
            dims = []
            for d, size in enumerate(val.shape):
                key = str(size.node.expr) if isinstance(size, torch.SymInt) else None
                if key in need and key not in self.sizes and key not in [k for _, k in dims]:
                    dims.append((d, key))
            if not dims:
                continue
            for d, key in dims:
                self.sizes[key] = self._size_name(key)
            pos = [d for d, _ in dims]
            names_ = [self.sizes[k] for _, k in dims]
            src = self.name_of[p]
            if pos == list(range(len(pos))):
                rhs = f"{src}.shape" if len(pos) == val.dim() else f"{src}.shape[:{len(pos)}]"
                self.lines.append(Line(f"{', '.join(names_)} = {rhs}"))
            else:
                for (d, _), nm in zip(dims, names_):
                    self.lines.append(Line(f"{nm} = {src}.size({d})"))

    def _size_name(self, key: str) -> str:
        if self.canonical:
            return f"n{len(self.sizes)}"
        name = self.dims.names.get(key, key)
        return re.sub(r"\W", "_", name)

    def _sym(self, value, prec: int) -> str:
        expr = value.node.expr if hasattr(value, "node") else value
        if not getattr(expr, "free_symbols", None):
            try:
                return str(int(expr))
            except TypeError:
                return str(expr)
        for s in expr.free_symbols:
            if str(s) not in self.sizes:
                self._late_size(str(s))
        text, p = sym_text(expr, self.sizes)
        return text if p >= prec else f"({text})"

    def _late_size(self, key: str) -> None:
        """A size no input has: read it from a value computed earlier in the function."""
        for v, name in list(self.name_of.items()):
            val = v.meta.get("val") if isinstance(v, torch.fx.Node) else None
            if isinstance(val, torch.Tensor):
                for d, size in enumerate(val.shape):
                    if isinstance(size, torch.SymInt) and str(size.node.expr) == key:
                        self.sizes[key] = self._size_name(key)
                        self.lines.append(Line(f"{self.sizes[key]} = {name}.size({d})"))
                        return
        raise NotImplementedError(f"model.py codegen: the size {self.dims.names.get(key, key)} is not the size of "
                                  f"any tensor {self.scope.path or 'forward'} can see")


def sym_text(expr, sizes: dict[str, str]) -> tuple[str, int]:
    """Python text of a sympy size expression over the dims' variables (`batch * seq`), with its precedence."""
    import sympy

    if isinstance(expr, sympy.Symbol):
        return sizes.get(str(expr), str(expr)), lift.ATOM
    if isinstance(expr, sympy.Integer):
        v = int(expr)
        return str(v), lift.ATOM if v >= 0 else lift.UNARY
    if isinstance(expr, sympy.Add):
        parts = [sym_text(a, sizes) for a in expr.args]
        text = parts[0][0]
        for t, _ in parts[1:]:
            text += f" - {t[1:]}" if t.startswith("-") else f" + {t}"
        return text, lift.ADD
    if isinstance(expr, sympy.Mul):
        parts = [sym_text(a, sizes) for a in expr.args]
        return " * ".join(t if p > lift.MUL else f"({t})" for t, p in parts), lift.MUL
    name = type(expr).__name__
    if name in ("FloorDiv", "CleanDiv", "IntTrueDiv") and len(expr.args) == 2:
        (a, pa), (b, pb) = (sym_text(x, sizes) for x in expr.args)
        return f"{a if pa >= lift.MUL else f'({a})'} // {b if pb > lift.MUL else f'({b})'}", lift.MUL
    text = str(expr)
    for s in sorted(expr.free_symbols, key=lambda s: -len(str(s))):
        text = text.replace(str(s), sizes.get(str(s), str(s)))
    return f"({text})", lift.ATOM


def symbols(node: torch.fx.Node, need: list, prog: Program) -> None:
    """Add to `need` the size symbols `node`'s arguments use."""
    def visit(a):
        if isinstance(a, torch.fx.Node):
            a = prog.rep(a)
            if is_symbolic(a):
                visit(a.meta.get("val"))
        elif isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            for s in a.node.expr.free_symbols:
                if str(s) not in need:
                    need.append(str(s))
        elif isinstance(a, (list, tuple)):
            for x in a:
                visit(x)
        elif isinstance(a, dict):
            for x in a.values():
                visit(x)

    visit(node.args)
    visit(node.kwargs)


def _carry(a: Scope, b: Scope | None):
    """[(input position of b, output position of a)] when every output of a feeds b; None otherwise."""
    if b is None:
        return None
    pairs = []
    for j, v in enumerate(b.inputs):
        if v in a.outputs:
            pairs.append((j, a.outputs.index(v)))
        elif j >= len(a.inputs) or a.inputs[j] is not v:
            return None
    if len(pairs) != len(a.outputs):
        return None
    return pairs


def _stmt_nodes(st: Stmt) -> list:
    if st.loop:
        return [n for s in st.loop for n in s.nodes()]
    if st.scope is not None:
        return st.scope.nodes()
    return [st.node] + [v for v in st.values if v is not None and v is not st.node]


def _kids(scope: Scope) -> list[Scope]:
    return [i for i in scope.items if isinstance(i, Scope)]


def _uses(node: torch.fx.Node, value, prog: Program) -> int:
    count = 0

    def visit(a):
        nonlocal count
        if isinstance(a, torch.fx.Node):
            count += prog.rep(a) is value
        elif isinstance(a, (list, tuple)):
            for x in a:
                visit(x)
        elif isinstance(a, dict):
            for x in a.values():
                visit(x)

    visit(node.args)
    visit(node.kwargs)
    return count


def _node(prog: Program, name: str) -> torch.fx.Node:
    return next(n for n in prog.cm.gm.graph.nodes if n.name == name)


def reads_of_scope(prog: Program, scope: Scope) -> list:
    inside = set(scope.nodes())
    return [a for n in scope.nodes() for a in reads(prog, n) if a not in inside]
