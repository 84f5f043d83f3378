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

import builtins
import keyword
import re

import torch
import torch.fx

from graphsurgeon.export.codegen import lift, names, packing
from graphsurgeon.export.codegen.defaults import hoist_defaults
from graphsurgeon.export.codegen.loops import Loops
from graphsurgeon.export.codegen.body import Body, Env, Line, Stmt, module_of, scope_depth  # noqa: F401
from graphsurgeon.export.codegen.scopes import Program, Scope, export_path, is_symbolic, owns, reads  # noqa: F401
from graphsurgeon.export.codegen.recipes import Recipes
from graphsurgeon.export.codegen.sizes import ConfigFloat, ConfigInt, Sizes
from graphsurgeon.export.codegen.statements import Statements, _stmt_nodes
from graphsurgeon.graph.tidy import PRECISION

LIMIT = 96  # the longest expression written by folding values into their reader
# names a value may not take: Python's keywords and builtins (`slice`, `max` — model.py calls some of them) and the
# names model.py itself uses
RESERVED = set(keyword.kwlist) | set(dir(builtins)) | {"self", "torch", "nn", "F", "math", "training", "layer", "os"}

class FunctionWriter(Statements, Sizes, Recipes, Loops):
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
        self.absorbed = self._absorb()
        self.chained: set[int] = set()  # statements folding into a later reader, between one value and its reader  # ops written inside a helper's call (rotate_half's slices and neg)
        self.adds_onto = {st.lora_onto: st.node for st in self.stmts if st.lora_onto is not None}

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
        self._dtype_line(params)
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
        body = Body(plist, self.lines, returns, training, extras=self._extra_params())
        hoist_defaults(body)  # `if position_ids is None:` as Hugging Face writes an input's default
        return body

    def param_names(self) -> list[str]:
        """The names this scope's inputs would get (before sizes), for choosing one name across calls."""
        declared = list(self.scope.params) + [None] * (len(self.scope.inputs) - len(self.scope.params))
        return [self._sanitize(d or self._want(p)) for p, d in zip(self.scope.inputs, declared)]

    @staticmethod
    def _sanitize(want: str) -> str:
        return want if want not in RESERVED else f"{want}_"

    def _pin(self) -> None:
        for st in self.stmts:
            if st.loop:
                first = st.loop[0]
                for v in first.inputs:
                    self.pinned.add(v)
                for by_kind in (st.kinds[1].values() if st.kinds else ()):
                    self.pinned.update(by_kind.values())
            if st.lora_onto is not None:
                self.pinned.add(st.lora_onto)
            if st.scope is not None and st.scope.kind == "lora":
                self.pinned.update(reads_of_scope(self.prog, st.scope))
        # query, key and value as the attention reads them, and what it computes, are named, each on its line
        self.pinned.update(self.env.kv.get(self.scope.key, ()))  # a KV cache rebinds them by name
        attentions = self.prog.cm.semantics().attentions
        operands = {op.node for a in attentions for op in a.operands.values()} | {a.core for a in attentions}
        self.pinned.update(st.node for st in self.stmts if st.node is not None and st.node in operands)

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

    def _absorb(self) -> set:
        """The slices and neg of each `rotate_half(x)` read by nothing else: the call stands for them (they count as
        read where the call is)."""
        out = set()
        for i, st in enumerate(self.stmts):
            found = lift.rotate_half_parts(st.node) if st.node is not None and not st.loop else None
            if found is None:
                continue
            x1, x2, neg = found[1]
            if all(set(self.prog.users.get(p, [])) <= {st.node, neg} for p in (x1, x2, neg)) \
                    and all(p in self.index for p in (x1, x2, neg)):
                out.update((x1, x2, neg))
                for p in (x1, x2, neg):
                    self.index[p] = i
        return out

    def _dead(self, value) -> bool:
        """True when nothing after the current statement of this function reads `value` (a reader outside the
        function holds its own reference: the name may be rebound, as `hidden_states = self.dense(hidden_states)`)."""
        if value in self.scope.outputs:
            return False
        for u in self.prog.users.get(value, []):
            if u.op == "output" or self.index.get(u, -1) > self.at:
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
        old = self.bound.get(name)  # (a value of this very statement, `a, a_2 = f()`, is not yet bound: no alias)
        if self.at < 0 or old is None or self._dead(old) or not isinstance(old, torch.fx.Node) \
                or self.index.get(old) == self.at \
                or (name == "residual") or ("residual" in self.bound and not self._dead(self.bound["residual"])):
            return
        sem = self.prog.cm.semantics()
        if any(u in self.index and self.prog.rep(sem.residual_operand(u), self.scope) is old
               for u in self.prog.users.get(old, [])):  # an add
            # in this function (RMSNorm's caller adds the residual: no `residual = …` line inside the norm)
            self.lines.append(Line(f"residual = {name}"))
            self.bound["residual"], self.name_of[old] = old, "residual"
            del self.bound[name]

    def _emit(self, st: Stmt) -> None:
        kv = self.env.kv.get(self.scope.key)
        if kv and not getattr(self, "_kv_done", False) and any(r in kv for r in self._reads(st)):
            self._kv_done = True
            k, v = (self.name_of[x] for x in kv)
            self.lines.append(Line("if self.kv_cache is not None:  # generating: the keys and values of earlier "
                                   "tokens come first"))
            self.lines.append(Line(f"{k}, {v} = self.kv_cache.update({k}, {v})", depth=1))
        if st.loop:
            self._emit_loop(st)
            return
        if st.node is not None and st.node in self.absorbed:  # written as rotate_half(x) by its cat
            self.pending += self._blocks(st)
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

    def _reads(self, st: Stmt) -> list:
        """The values from before `st` that it reads."""
        if st.scope is not None:
            return [self.prog.rep(v, self.scope) for v in st.scope.inputs]
        if st.node is None:
            return []
        return [self.prog.rep(v, self.scope) for v in st.node.all_input_nodes]

    def _foldable(self, st: Stmt, expr: lift.Expr) -> bool:
        if self.at in self.chained:
            return True
        reader = self._reader(self.at)
        if reader is None:
            return False
        if reader > self.at + 1:  # one source line's expression tree, `q * cos + rotate_half(q) * sin`: every
            # statement up to its reader folds into it, so no name is rebound in between
            within = range(self.at + 1, reader)
            if len(expr.text) > LIMIT or any(self._reader(k) is None or self._reader(k) > reader for k in within):
                return False
            self.chained.update(within)
            return True
        if st.scope is not None and st.scope.kind == "lora":
            return self.stmts[reader].lora_onto is not None  # the update is written inside its add
        return len(expr.text) <= LIMIT

    def _reader(self, i: int) -> int | None:
        """The statement that reads statement i's one value, once, on the same source line (None: there is none,
        or the value needs a name)."""
        st = self.stmts[i]
        if st.node is not None and st.node in self.absorbed:
            return self.index[st.node]
        if st.loop or len(st.values) != 1 or st.values[0] is None or st.optional and st.scope is None:
            return None
        v = st.values[0]
        if v in self.pinned or v in self.scope.outputs or isinstance(v.meta.get("val"), (list, tuple)):
            return None
        users = self.prog.users.get(v, [])
        readers = {self.index.get(u) for u in users}
        if len(readers) != 1 or None in readers:
            return None
        j = readers.pop()
        if j <= i or j >= len(self.stmts):
            return None
        reader = self.stmts[j]
        if reader.loop or (reader.node is not None and _uses(reader.node, v, self.prog) != 1):
            return None
        if reader.scope is not None and reader.scope.kind == "lora":
            return None
        if st.scope is not None and st.scope.kind == "lora":
            return j if j == i + 1 else None
        if j > i + 1 and (st.scope is not None or reader.lora_onto is not None):
            return None  # a call folds only into the next statement
        return j if st.line is not None and st.line == reader.line else None

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
        if st.scope is not None:  # a layer (nn.Embedding) may make a default: `inputs_embeds = self.wte(input_ids)`
            expr = lift.Expr(self._call(st.scope), lift.CALL)
            node = st.scope.outputs[0] if st.scope.key in self.env.leaves and len(st.scope.outputs) == 1 else None
        elif st.node.op == "call_module":
            target = export_path(self.prog.loras, str(st.node.target))  # a LoRA's layer written inline
            return lift.Expr(f"{self.env.attr(module_of(self.scope).path, target)}"
                             f"({', '.join(self.arg(a) for a in st.node.args)})", lift.CALL)
        else:  # a constant folded from a config size: the code that computes it (recipes.py)
            expr, node = self._recipe(st.node) or lift.render(self, st.node, self._config_args(st.node)), st.node
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
            args += self._extra_args(child)
            return packing.wrap(self, child, f"{self.env.function_names[child.key]}({', '.join(args)})")
        callee = self.env.attr(base, child.path)
        if leaf is not None:
            text = f"{callee}({leaf.argument(self.arg(leaf.input))})"
            if child.kind == "lora":
                text += self._lora_reshape(child, leaf)
            return text
        args = [self.arg(a) for a in child.inputs] + [self._sym_key(k) for k in child.sizes]
        return f"{callee}({', '.join(args)})"

    def _sym_key(self, key: str) -> str:
        if key not in self.sizes:
            self._late_size(key)
        return self.sizes[key]

    # ---- lift.Ctx ------------------------------------------------------------------------------
    def arg(self, value, prec: int = 0) -> str:
        if isinstance(value, (ConfigInt, ConfigFloat)):  # a size read from the config (sizes.py)
            atom = re.fullmatch(r"[\w.]+(\[-?\d+\])?|(\w+\.)*\w+\([\w.()\-]*\)", value.text)  # `math.sqrt(self.d)`
            return value.text if prec <= lift.MUL or atom else f"({value.text})"
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
            same = self._same_value(value)
            if same is not None:
                return self.name_of[same]
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

    def _same_value(self, value: torch.fx.Node):
        """A named value that is `value` itself: a `.to(dtype)` that changed nothing (prog.soft) and its input stand
        for each other; which one a reader sees depends on its scope (a child returns the cast, its caller reads
        the input: ErgoMoE's router weights)."""
        soft = self.prog.soft
        if soft.get(value) in self.name_of:
            return soft[value]
        return next((k for k in self.name_of if isinstance(k, torch.fx.Node) and soft.get(k) is value), None)

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

    def kv_cache(self) -> bool:
        return bool(self.env.kv)

    def value_of(self, value):
        return self.prog.rep(value, self.scope)

    def mask_form(self, value) -> str | None:
        return self.env.masks.get(self.prog.rep(value, self.scope)) if isinstance(value, torch.fx.Node) else None

    def dtype(self) -> str:
        """The activations' dtype: `input_dtype` (read from a floating input first, as HF writes it), else a
        floating parameter's or buffer's dtype of this module (rotary's `self.inv_freq.dtype`)."""
        if getattr(self, "_dtype", None):
            return self._dtype
        if self.scope.kind != "function":
            for p, names_ in self.prog.params.items():
                val = p.meta.get("val")
                if owns(module_of(self.scope), names_) and isinstance(val, torch.Tensor) and val.is_floating_point():
                    return f"{self.arg(p)}.dtype"
            return "torch.get_default_dtype()"
        # a function with no floating input: its caller passes the activations' dtype (Bloom's build_alibi_tensor)
        self.__dict__.setdefault("extras", {})["dtype"] = None
        return "dtype"

    def _dtype_line(self, params: list) -> None:
        """`input_dtype = hidden_states.dtype` before a body that casts back to it (RMSNorm's float32 detour)."""
        self._dtype = None
        if not any(isinstance(n, torch.fx.Node) and n.meta.get(PRECISION) == "follow" for n in self.scope.items):
            return
        for p in params:
            val = p.meta.get("val")
            if isinstance(val, torch.Tensor) and val.is_floating_point() and p in self.name_of:
                self._dtype = "input_dtype"
                self.bound["input_dtype"] = object()
                self.lines.append(Line(f"input_dtype = {self.name_of[p]}.dtype"))
                return

def _uses(node: torch.fx.Node, value, prog: Program) -> int:
    """How many of `node`'s arguments are `value` (through the values they stand for)."""
    count = 0

    def seen(a: torch.fx.Node) -> torch.fx.Node:
        nonlocal count
        count += prog.rep(a) is value
        return a

    torch.fx.node.map_arg((node.args, node.kwargs), seen)
    return count


def reads_of_scope(prog: Program, scope: Scope) -> list:
    inside = set(scope.nodes())
    return [a for n in scope.nodes() for a in reads(prog, n) if a not in inside]
