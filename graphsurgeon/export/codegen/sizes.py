"""Sizes in generated code: symbolic dims read from the inputs' shapes (`batch, seq = input_ids.shape`), size
arithmetic as Python (`batch * seq`), a size no input has passed by the caller, and a fixed size read from the config
(`self.head_dim`) or, in a function, from an input's shape (a mixin of the FunctionWriter)."""

from __future__ import annotations

import math
import re

import torch
import torch.fx

from graphsurgeon.export.codegen import lift
from graphsurgeon.export.codegen.body import Line, module_of
from graphsurgeon.export.codegen.scopes import Program, is_symbolic
from graphsurgeon.graph.hf_meta import train_dropout_p
from graphsurgeon.graph.semantics.source import node_frames


# where an op takes sizes (op -> argument names): the numbers there are the config's, or a literal of the model
SIZE_ARGS = {
    "view": ("size",), "_unsafe_view": ("size",), "reshape": ("shape",), "expand": ("size",), "split": ("split_size",),
    "split_with_sizes": ("split_sizes",), "slice": ("start", "end"), "narrow": ("start", "length"),
    "arange": ("start", "end"), "zeros": ("size",), "ones": ("size",), "empty": ("size",), "full": ("size",),
    "new_zeros": ("size",), "new_ones": ("size",), "new_empty": ("size",), "new_full": ("size",),
    "scaled_dot_product_attention": ("scale",), "layer_norm": ("normalized_shape", "eps"),
    "rms_norm": ("normalized_shape", "eps"), "baddbmm": ("alpha",), "topk": ("k",), "histc": ("bins", "max"),
}
# a float operand (eps, scaling); floor_divide's int too (a token's expert slot // experts per token); another int
# operand only as an attribute the module's forward names (DeBERTa's `att_span - x`, `x + att_span`)
SCALAR_ARGS = {"add": "other", "sub": "other", "rsub": "other", "mul": "other", "div": "other",
               "floor_divide": "other"}


class ConfigInt(int):
    """A size in an op's arguments that the code reads from the config (`text`)."""

    text: str


class ConfigFloat(float):
    text: str


def _marked(value, text: str):
    out = (ConfigFloat if isinstance(value, float) else ConfigInt)(value)
    out.text = text
    return out


# a rate or scale an attention function takes from its module, under Hugging Face's names: argument -> (parameter,
# the module's attribute when the module has no attribute of that value itself)
FROM_MODULE = {"scale": ("scaling", None), "_dropout_p": ("dropout", "attention_dropout")}


class Sizes:
    def _config_args(self, node: torch.fx.Node) -> dict | None:
        """The node's arguments with its fixed sizes marked by the expression that reads them (None: no change)."""
        config = self.env.config
        if config is None or not config.active or node.op != "call_function" or self.scope.kind == "lora" \
                or not hasattr(node.target, "_schema"):
            return None
        a = lift.bound(node)
        key = lift.op_key(node)
        frames = node_frames(node)
        self._line = frames[-1].own if frames else ""  # the source line the node comes from (`config.attribute`)
        names_ = SIZE_ARGS.get(key, ())
        named = False  # an int operand: only an attribute the forward names
        if key in SCALAR_ARGS and isinstance(a.get(SCALAR_ARGS[key]), (int, float)):
            names_ = (SCALAR_ARGS[key],)
            named = isinstance(a[names_[0]], int) and key != "floor_divide"
        if key in ("scaled_dot_product_attention", "dropout") and train_dropout_p(node) > 0:  # HF's rate in training
            a["_dropout_p"], names_ = train_dropout_p(node), names_ + ("_dropout_p",)
        own = a.get("self", a.get("input"))
        changed = False
        for name in names_:
            v = a.get(name)
            if isinstance(v, (list, tuple)):
                new = [self._config_number(x, name, own) for x in v]
                if any(n is not x for n, x in zip(new, v)):
                    a[name], changed = type(v)(new), True
            elif self._config_number(v, name, own, named) is not v:
                a[name], changed = self._config_number(v, name, own, named), True
        return a if changed else None

    def _config_number(self, v, arg: str, own=None, named: bool = False):
        """`v` marked with the expression the code reads it from, or `v` itself (a literal of the model); `named`:
        only as an attribute of that value the module's forward reads by name."""
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v in (-1, 0, 1):
            return v
        if self.scope.kind == "function" and arg in FROM_MODULE:  # the caller passes its module's attribute
            name = FROM_MODULE[arg][0]
            self.__dict__.setdefault("extras", {})[name] = v
            return _marked(v, name)
        if self.scope.kind == "function" and named:
            return v
        if self.scope.kind == "function":
            text = self._input_size(v, own) if isinstance(v, int) else None
            if text is None and isinstance(v, int) and v > 2:  # (2 is a dim, a half, a pair far more often)
                text = self._caller_attribute(v)
        else:
            hint = FROM_MODULE.get(arg, (None, None))[1]
            path = module_of(self.scope).path
            text = self.env.config.attribute(path, v, hint, named, self.__dict__.get("_line", ""))
            if named:
                return _marked(v, text) if text else v
            if text is None and arg == "max" and isinstance(v, int):  # histc's last bin: a count's last index
                text = self.env.config.attribute(path, v + 1)
                text = f"{text} - 1" if text else None
            if text is None and isinstance(v, int) and v >= 2 and self.env.config.active:
                text = self._input_size(v, own, halves=False)  # HF's `hidden_states.view(-1, hidden_dim)`
            if text is None and isinstance(v, float) and v > 1 and self.env.config.roots_a_size(path):
                text = self._root_of_size(v)
        return _marked(v, text) if text else v

    def _root_of_size(self, v: float) -> str | None:
        """`math.sqrt(value.size(-1))` for a float that is the root of the last size of a value the scope holds."""
        for p, name in self.name_of.items():
            val = p.meta.get("val") if isinstance(p, torch.fx.Node) else None
            if isinstance(val, torch.Tensor) and val.dim() and isinstance(val.shape[-1], int) and val.shape[-1] > 1 \
                    and math.sqrt(val.shape[-1]) == v and self._same_last(p) and not self._may_be_none(p):
                return f"math.sqrt({name}.size(-1))"
        return None

    def _same_last(self, p) -> bool:
        """Whether p's name, where the size is read, still holds p or a value of its last size (so does
        `cos = cos.unsqueeze(1)`; a name rebound to another tensor, `part, part_2 = x.sort()`, does not)."""
        now = self.bound.get(self.name_of[p])
        if now is p:
            return True
        val = now.meta.get("val") if isinstance(now, torch.fx.Node) else None
        return isinstance(val, torch.Tensor) and val.dim() > 0 and val.shape[-1] == p.meta["val"].shape[-1] \
            and isinstance(val.shape[-1], int)

    def _input_size(self, v: int, own=None, halves: bool = True) -> str | None:
        """A fixed size as the feature size (last dim) of the tensor it shapes or of an input (`cos.shape[-1]`), or
        half of one (`x.shape[-1] // 2`)."""
        tensors = ([self.prog.rep(own, self.scope)] if isinstance(own, torch.fx.Node) else []) + list(self.scope.inputs)
        tensors = [p for p in tensors if isinstance(p.meta.get("val"), torch.Tensor) and p in self.name_of
                   and self._same_last(p) and not self._may_be_none(p)]
        divisors = [(val, f" // {k}") for k, val in self.__dict__.get("extras", {}).items()  # a size per head:
                    if type(val) is int and val > 1]  # `x.size(-1) // n_head`, n_head a parameter its module passes
        for factor, suffix in ((1, ""), (2, " // 2"))[: 2 if halves else 1] + tuple(divisors):
            for p in tensors:
                last = p.meta["val"].shape[-1] if p.meta["val"].dim() else None
                if isinstance(last, int) and last == factor * v:
                    return f"{self.name_of[p]}.shape[-1]{suffix}"
        return None

    def _caller_attribute(self, v: int) -> str | None:
        """A function's fixed size as a parameter its module passes from its own attribute of that value (Bloom's
        `build_alibi_tensor(attention_mask, num_heads)` called with `self.num_heads`), else None."""
        attr = self.env.config.attribute(module_of(self.scope).path, v)
        name = attr.removeprefix("self.") if attr else ""
        if not name.isidentifier() or name in self.__dict__.get("extras", {}) and self.extras[name] != v:
            return None
        self.__dict__.setdefault("extras", {})[name] = v
        return name

    def _extra_params(self) -> list[str]:
        """A function's parameters for what its module passes (`scaling`, `dropout`), recorded for its callers."""
        extras = self.__dict__.get("extras", {})
        if self.scope.kind == "function":
            self.env.extras[self.scope.key] = list(extras.items())
        return list(extras)

    def _extra_args(self, child) -> list[str]:
        """`scaling=self.scaling, dropout=self.attention_dropout`: what a call passes to a function's extras."""
        out = []
        for name, v in self.env.extras.get(child.key, []):
            if name == "dtype":  # the activations' dtype, as the caller knows it (`hidden_states.dtype`, as HF)
                out.append(f"dtype={self._activations_dtype()}")
                continue
            arg = next((k for k, (n, _) in FROM_MODULE.items() if n == name), None)
            if arg is None:  # a size the function takes from its module's attribute `name` (_caller_attribute)
                marked = self._config_number(v, "shape")
            else:
                marked = self._config_number(v, arg) if self.scope.kind != "function" else v
            out.append(f"{name}={self.arg(marked)}")
        return out

    def _activations_dtype(self) -> str:
        """The dtype of the last activation named so far in this scope, else the scope's own (writer.dtype)."""
        for v, name in reversed(list(self.name_of.items())):
            val = v.meta.get("val") if isinstance(v, torch.fx.Node) and v.op != "get_attr" else None
            if isinstance(val, torch.Tensor) and val.is_floating_point() and val.dim() >= 2 and name.isidentifier():
                return f"{name}.dtype"
        return self.dtype()

    def _lora_reshape(self, child, leaf) -> str:
        """A LoRA update computed as [..., out]; reshaped when its target has another shape."""
        out = child.outputs[0].meta.get("val")
        x = leaf.input.meta.get("val")
        if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
            return ""
        natural = [self.dims.text(d) for d in x.shape[:-1]] + [str(leaf.lora.target.out_features)]
        if [self.dims.text(d) for d in out.shape] == natural:
            return ""
        like = self._added_to(child.outputs[0])
        if like is not None:  # shaped as the slice of the fused output it is added to: `query + lora(x).view_as(query)`
            return f".view_as({like})"
        dims = [d if not isinstance(d, int) or d < 2 else self._config_number(d, "shape") for d in out.shape]
        fixed = [i for i, d in enumerate(dims) if isinstance(d, int) and d >= 2]
        loose = [i for i in fixed if not isinstance(dims[i], ConfigInt)]
        if fixed and len(loose) <= 1:  # the heads (or the one size with no config expression): -1, as HF's views
            dims[(loose or fixed)[0]] = -1
        return f".reshape({', '.join(self.arg(d) for d in dims)})"

    def _added_to(self, update: torch.fx.Node) -> str | None:
        """The name of the tensor a reshaped LoRA update is added to, when the add is its only reader and the two have
        one shape (the update then takes that tensor's shape at any config), else None."""
        users = list(update.users)
        if len(users) != 1 or users[0].op != "call_function" or lift.op_key(users[0]) != "add":
            return None
        other = next((a for a in users[0].args[:2] if a is not update), None)
        if not isinstance(other, torch.fx.Node):
            return None
        other = self.prog.rep(other, self.scope)
        a, b = other.meta.get("val"), update.meta.get("val")
        if other in self.folded or other not in self.name_of or not isinstance(a, torch.Tensor) \
                or [self.dims.text(d) for d in a.shape] != [self.dims.text(d) for d in b.shape]:
            return None
        return self.name_of[other]

    def _size_lines(self, params: list) -> None:
        need: list = []
        for n in self.scope.items:
            if isinstance(n, torch.fx.Node):
                symbols(n, need, self.prog)
            elif self.env.leaves.get(n.key) is None:
                need += [k for k in n.sizes if k not in need]
        cached = {v for kv in self.env.kv.values() for v in kv}  # keys / values a KV cache makes longer than the
        for p in sorted(params, key=lambda p: p in cached):  # queries: their sizes read from the others first
            val = p.meta.get("val")
            if not isinstance(val, torch.Tensor) or p not in self.name_of or self._may_be_none(p):
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
            if pos == list(range(len(pos))) and len(pos) > 1:
                rhs = f"{src}.shape" if len(pos) == val.dim() else f"{src}.shape[:{len(pos)}]"
                self.lines.append(Line(f"{', '.join(names_)} = {rhs}"))
            else:
                for (d, _), nm in zip(dims, names_):
                    self.lines.append(Line(f"{nm} = {src}.size({d})"))

    def _may_be_none(self, value) -> bool:
        """A mask the builder returns as None when nothing is padded (the fast path): no size is read from it."""
        return self.mask_form(value) is not None

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
        text, p = sym_text(expr, self.sizes, self._coefficient)
        return text if p >= prec else f"({text})"

    def _coefficient(self, c: int) -> str | None:
        """The config expression of a size's integer factor (`batch * self.num_heads`: Bloom's heads folded into the
        batch), or None (a literal of the model)."""
        marked = self._config_number(c, "shape")
        return marked.text if isinstance(marked, ConfigInt) else None

    def _late_size(self, key: str) -> None:
        """A size no input has: read it from a value computed earlier in the function."""
        for v, name in list(self.name_of.items()):
            val = v.meta.get("val") if isinstance(v, torch.fx.Node) else None
            if isinstance(val, torch.SymInt) and str(val.node.expr) == key:  # `n = x.item()`
                self.sizes[key] = name
                return
            if isinstance(val, torch.Tensor) and not self._may_be_none(v):
                for d, size in enumerate(val.shape):
                    times = multiple_of(size.node.expr, key) if isinstance(size, torch.SymInt) else None
                    if times is not None:  # the size itself, or a multiple of it (seq = 4·s9: windows of 4)
                        self.sizes[key] = self._size_name(key)
                        whole = f"{name}.size({d})" + (f" // {times}" if times > 1 else "")
                        self.lines.append(Line(f"{self.sizes[key]} = {whole}"))
                        return
        raise NotImplementedError(f"model.py codegen: the size {self.dims.names.get(key, key)} is not the size of "
                                  f"any tensor {self.scope.path or 'forward'} can see")


def multiple_of(expr, key: str) -> int | None:
    """n when the size expression `expr` is n·`key` (n a positive integer), else None."""
    if str(expr) == key:
        return 1
    coeff, rest = expr.as_coeff_Mul()
    return int(coeff) if str(rest) == key and coeff.is_Integer and coeff > 0 else None


def sym_text(expr, sizes: dict[str, str], coefficient=None) -> tuple[str, int]:
    """Python text of a sympy size expression over the dims' variables (`batch * seq`), with its precedence; an
    integer factor above 2 `coefficient` knows the config expression of is written as that (`batch * self.num_heads`;
    2 stays a literal: a pair or a doubling far more often than a size that happens to be 2)."""
    import sympy

    factor = coefficient(int(expr.args[0])) if coefficient is not None and isinstance(expr, sympy.Mul) \
        and isinstance(expr.args[0], sympy.Integer) and int(expr.args[0]) > 2 else None
    if factor:
        rest, p = sym_text(sympy.Mul(*expr.args[1:]), sizes, coefficient)
        return f"{rest if p >= lift.MUL else f'({rest})'} * {factor if '+' not in factor else f'({factor})'}", lift.MUL
    if isinstance(expr, sympy.Symbol):
        return sizes.get(str(expr), str(expr)), lift.ATOM
    if isinstance(expr, sympy.Integer):
        v = int(expr)
        return str(v), lift.ATOM if v >= 0 else lift.UNARY
    if isinstance(expr, sympy.Add):
        parts = [sym_text(a, sizes, coefficient) for a in expr.args]
        text = parts[0][0]
        for t, _ in parts[1:]:
            text += f" - {t[1:]}" if t.startswith("-") else f" + {t}"
        return text, lift.ADD
    if isinstance(expr, sympy.Mul):
        if expr.args[0] == -1:  # -seq, not -1 * seq
            text, p = sym_text(sympy.Mul(*expr.args[1:]), sizes)
            return f"-{text if p > lift.ADD else f'({text})'}", lift.UNARY
        parts = [sym_text(a, sizes) for a in expr.args]
        return " * ".join(t if p > lift.MUL else f"({t})" for t, p in parts), lift.MUL
    name = type(expr).__name__
    if name in ("Max", "Min"):  # bounds of a slice (`x[:, max(0, 64 - seq):]`), a span (`min(self.att_span, seq)`)
        bounds = [(coefficient(int(a)) if coefficient is not None and isinstance(a, sympy.Integer) and int(a) > 2
                   else None) or sym_text(a, sizes)[0] for a in expr.args]
        return f"{name.lower()}({', '.join(bounds)})", lift.ATOM
    if name in ("Mod", "PythonMod") and len(expr.args) == 2:
        (a, pa), (b, pb) = (sym_text(x, sizes) for x in expr.args)
        return f"{a if pa >= lift.MUL else f'({a})'} % {b if pb > lift.MUL else f'({b})'}", lift.MUL
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
        return a

    torch.fx.node.map_aggregate((node.args, node.kwargs), visit)
