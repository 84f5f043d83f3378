"""Sizes as expressions of the model's config: `nn.Linear(config.n_embd, 3 * config.n_embd)`, `range(config.n_layer)`,
`self.head_dim = config.n_embd // config.n_head`.

A number is matched to the config at three points: the Hugging Face model built (on the meta device) at its own
config and at two probe configs whose size fields were moved apart (codegen/probes.py). The same
constructor argument, module attribute or tensor dimension read in the three models gives three values; the config
expression that gives all three is the one the code writes (a field, a quotient of fields such as head_dim, a small
multiple, a half, a product, a sum, heads of two kinds times head_dim); one the same at all three is no evidence
and is not used (it stays a literal). A ModuleList's length comes from the config
only where one loop runs the whole list. Ties go to the fields the Hugging Face class's own source reads. A number
that matches no expression stays a literal (the model's own code has it: OPT's position offset 2, DistilBERT's eps
1e-12).
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import re
from dataclasses import dataclass, field

import torch

from graphsurgeon.export.codegen.probes import LAYERS, number as _number, three_models

SKIP_ATTRS = {"training", "layer_idx"}


@dataclass
class Found:
    text: str  # the expression ("config.n_embd // config.n_head")
    fields: set[str] = field(default_factory=set)  # the config fields it reads


class ConfigSizes:
    """What model.py's classes write in place of numbers (nothing when the model has no Hugging Face config)."""

    def __init__(self, cm) -> None:
        self.cm = cm
        self.used: dict[str, object] = {}  # config field -> its value (the dataclass's fields, in first-use order)
        self.attrs: dict[str, dict[str, str]] = {}  # module path -> {attribute: expression} its __init__ sets
        self.models: list = []  # the Hugging Face model at its config, then at each probe config (meta device)
        self.cfgs: list[dict] = []  # their numeric fields
        self.class_name = "Config"
        self.aliases: dict[str, str] = {}
        # the fields Config refuses to change (the export's second-config check refused model.py there), and
        # whether every size is then a literal
        self.pinned: dict[str, object] = dict(getattr(cm, "sizes_fixed_fields", None) or {})
        self.literal = bool(getattr(cm, "sizes_literal", False))
        if self.literal:
            self.used = dict(self.pinned)
            return
        try:
            self._build()
        except Exception:  # noqa: BLE001 - no Hugging Face model to compare with: every number stays a literal
            self.models = []

    # ---- the three models ----------------------------------------------------------------------------
    def _build(self) -> None:
        import json

        built = three_models(self.cm.model_class, json.dumps(self.cm.config or {}, sort_keys=True, default=str))
        if built is not None:
            self.class_name, self.aliases, self.cfgs, self.moved, self.models = built

    @property
    def active(self) -> bool:
        return len(self.models) == 3

    def modules(self, path: str) -> list | None:
        """The module at `path` in the three Hugging Face models (None: no such module or no models)."""
        if not self.active:
            return None
        try:
            return [m.get_submodule(path) for m in self.models]
        except AttributeError:
            return None

    # ---- solving -------------------------------------------------------------------------------------
    def solve(self, values: tuple, prefer: set[str] = frozenset()) -> Found | None:
        """The config expression equal to values[i] at config i (the model's, then the probes')."""
        if not self.active or len(values) != 3 or not all(_number(v) for v in values):
            return None
        if all(_eq(v, values[0]) for v in values[1:]):  # the same at every probe: no config expression is proven
            return None  # (DeBERTa's 32 relative positions are not `8 * (intermediate // pooler_hidden)`)
        for tier in self._tiers(isinstance(values[0], float)):
            hits = [(t, f) for t, f, v in tier if all(_eq(a, b) for a, b in zip(v, values))]
            if hits:
                hits.sort(key=lambda h: (not (h[1] <= prefer), len(h[0])))
                return self._use(*hits[0])
        return None

    def _use(self, text: str, fields: set[str]) -> Found:
        for f in sorted(fields, key=text.index):
            self.used.setdefault(f, self.cfgs[0][f])
        return Found(text, set(fields))

    def _tiers(self, floating: bool):
        """Candidate expressions, simplest first: (text, fields, its value at each config)."""
        cache = self.__dict__.setdefault("_tier_cache", {})
        if floating in cache:
            return cache[floating]
        real = self.cfgs[0]

        def at(k):
            return tuple(c[k] for c in self.cfgs)

        ints = [(f"config.{k}", {k}, at(k)) for k, v in real.items()
                if isinstance(v, int) and v > 0 and k in self.moved]
        quotients = [(f"{a} // {b}", fa | fb, tuple(x // y for x, y in zip(va, vb)))
                     for a, fa, va in ints for b, fb, vb in ints
                     if a != b and all(1 < y < x and x % y == 0 for x, y in zip(va, vb))]
        atoms = ints + quotients
        if floating:
            floats = [(f"config.{k}", {k}, tuple(float(x) for x in at(k))) for k, v in real.items()
                      if isinstance(v, float) and k in self.moved]
            powers = [(f"{_paren(t)} ** {e}", f, tuple(x ** e for x in v)) for t, f, v in atoms for e in (-0.5, 0.5)]
            tiers = [floats, powers]
        else:
            multiples = [(f"{k} * {_paren(t)}", f, tuple(k * x for x in v)) for t, f, v in atoms for k in range(2, 9)]
            halves = [(f"{t} // {k}", f, tuple(x // k for x in v)) for t, f, v in atoms for k in (2, 4)
                      if all(x % k == 0 for x in v)]
            products = [(f"{a} * {_paren(b)}", fa | fb, tuple(x * y for x, y in zip(va, vb)))
                        for a, fa, va in ints for b, fb, vb in atoms if a != b]
            sums = [(f"{a} + {k} * {_paren(b)}" if k > 1 else f"{a} + {b}", fa | fb,
                     tuple(x + k * y for x, y in zip(va, vb))) for a, fa, va in ints for b, fb, vb in atoms
                    if a != b for k in (1, 2)]
            offsets = [(f"{t} + {c}", f, tuple(x + c for x in v)) for t, f, v in ints for c in (1, 2)]
            # heads of each kind times head_dim: Falcon's fused q/k/v, `(heads + 2 * kv_heads) * head_dim`
            per_head = [(f"({a} + {k} * {b}) * ({q})", fa | fb | fq,
                         tuple((x + k * y) * z for x, y, z in zip(va, vb, vq)))
                        for a, fa, va in ints for b, fb, vb in ints if a != b for k in (1, 2)
                        for q, fq, vq in quotients]
            # a multiple of a product: MiniCPM 5 MoE's gated queries, `2 * heads * head_dim`
            scaled = [(f"{k} * {t}", f, tuple(k * x for x in v)) for t, f, v in products for k in (2, 3, 4)]
            tiers = [ints, quotients, multiples, halves, products, sums, offsets, per_head, scaled]
        cache[floating] = tiers
        return tiers

    def prefer(self, path: str, method: str = "__init__") -> set[str]:
        """The config fields (own names) the Hugging Face class at `path` reads in `method`'s source."""
        mods = self.modules(path)
        if mods is None:
            return set()
        return {self.aliases.get(n, n) for n in re.findall(r"config\.(\w+)", _source(type(mods[0]), method))}

    # ---- what classes write --------------------------------------------------------------------------
    def ctor(self, path: str, text: str) -> str:
        """A torch.nn layer's constructor (`nn.Linear(64, 192)`) with its sizes as config expressions: each number
        is read as the layer's attribute of that parameter's name in the three models."""
        mods = self.modules(path)
        if mods is None:
            return _drop_defaults(text)
        try:
            call = ast.parse(text, mode="eval").body
        except SyntaxError:
            return text
        names = _param_names(type(mods[0]))
        if not isinstance(call, ast.Call) or names is None:
            return _drop_defaults(text)
        prefer = self.prefer(path.rpartition(".")[0]) | self.prefer(path)
        slots = [(names[i] if i < len(names) else None, a) for i, a in enumerate(call.args)]
        slots += [(k.arg, k.value) for k in call.keywords]
        changed = False
        for name, node in slots:
            if name is None or not isinstance(node, ast.Constant) or not _number(node.value):
                continue
            values = tuple(_first(getattr(m, name, None)) for m in mods)
            if not _eq(values[0], node.value):
                continue
            found = self.solve(values, prefer)
            if found is not None:
                _replace(call, node, ast.parse(found.text, mode="eval").body)
                changed = True
        return _drop_defaults(ast.unparse(call) if changed else text)

    def count(self, path: str, n: int) -> str:
        """The length of the numbered layers at `path` (`config.n_layer`)."""
        mods = self.modules(path)
        if mods is None or len(mods[0]) != n:
            return str(n)
        found = self.solve(tuple(len(m) for m in mods), self.prefer(path.rpartition(".")[0]))
        return found.text if found else str(n)

    def repeats(self, path: str, n: int) -> str:
        """How many times the module at `path` calls one module in a row: its `self.<layer count>` where the config's
        layer count is n (ALBERT calls its shared layer group once per layer), else the literal."""
        for k in LAYERS if self.active else ():
            if self.cfgs[0].get(k) == n and k in self.moved:
                self.attrs.setdefault(path, {})[k] = self._use(f"config.{k}", {k}).text
                return f"self.{k}"
        return str(n)

    def shape(self, name: str, shape: tuple) -> list[str]:
        """The dims of tensor `name` (a parameter or buffer a class holds itself)."""
        tensors = [_tensor(m, name) for m in self.models] if self.active else [None]
        if any(t is None for t in tensors) or tuple(tensors[0].shape) != tuple(shape) \
                or len({t.dim() for t in tensors}) != 1:
            return [str(d) for d in shape]
        prefer = self.prefer(name.rpartition(".")[0])
        out = []
        for d, size in enumerate(shape):
            found = self.solve(tuple(int(t.shape[d]) for t in tensors), prefer) if size > 1 else None
            out.append(found.text if found else str(size))
        return out

    def attribute(self, path: str, value, hint: str | None = None, named: bool = False, line: str = "") -> str | None:
        """`self.<attr>` for a number the forward of the module at `path` reads, its __init__ line recorded in
        `attrs`: the Hugging Face module's attribute of that value (`head_dim`, `scaling`, `embed_dim`), else the
        rate of one of its dropout layers under HF's attribute name `hint` (`attention_dropout`). `named`: only an
        attribute the forward reads by name, of the value's type. None: no attribute has it; "": several that
        move apart do (a coincidence of this config: the number stays a literal) and the source `line` the number
        was read on names none or several of them."""
        mods = self.modules(path)
        if mods is None:
            return None
        prefer = self.prefer(path)
        src = _source(type(mods[0]), "forward")
        own = [k for k, v in vars(mods[0]).items() if k not in SKIP_ATTRS and not k.startswith("_") and _number(v)]
        own.sort(key=lambda k: f"self.{k}" not in src)
        if named:  # only an attribute the forward reads by name, exactly
            own = [k for k in own if re.search(rf"self\.{k}(?!\w)", src) and type(getattr(mods[0], k)) is type(value)]

        def move(k):  # the attribute's values in the three models
            return tuple(getattr(m, k, None) for m in mods)

        # of that value; not an int for a float the forward computed; moved by the probes (else it proves nothing)
        equal = [k for k in own if _eq(getattr(mods[0], k), value) and len(set(move(k))) > 1
                 and not (isinstance(value, float) and isinstance(getattr(mods[0], k), int))]
        named_in_src = [k for k in equal if f"self.{k}" in src]
        moves = {move(k) for k in named_in_src or equal}
        on_line = [k for k in equal if re.search(rf"self\.{k}(?!\w)", line)]
        if len(moves) > 1 and len({move(k) for k in on_line}) == 1:
            equal, moves = on_line, {0}  # the line reads one of them (StableLM: `x[..., : self.rotary_ndims]` and
            # `x.view(bsz, q_len, self.num_heads, self.head_dim)`, both 4 at the tiny config)
        if len(moves) > 1:  # attributes that move apart and all equal the number here: a coincidence of this
            return ""  # config (DeBERTa's head size and relative span, both 16); it stays a literal, no other guess
        for k in equal:
            found = self.solve(move(k), prefer)
            if found is not None:
                self.attrs.setdefault(path, {})[k] = found.text
                return f"self.{k}"
        for roots, k in _square_roots(src) if isinstance(value, float) else ():  # as the source reads it:
            attr = getattr(mods[0], k, None)  # `scores / math.sqrt(self.attention_head_size)`, Nyströmformer's
            if isinstance(attr, int) and attr > 1 and _eq(attr ** (0.5 ** roots), value):  # root of a root
                found = self.solve(move(k), prefer)
                if found is not None:
                    self.attrs.setdefault(path, {})[k] = found.text
                    return "math.sqrt(" * roots + f"self.{k}" + ")" * roots
        multiples = []  # a small multiple of one (`3 * self.head_size`: GPT-NeoX's fused q/k/v per head)
        for k in own if not named else ():
            v = getattr(mods[0], k)
            if isinstance(v, int) and v > 1 and isinstance(value, int) and value % v == 0 and 2 <= value // v <= 4:
                multiples.append((k, value // v))
        if len(multiples) == 1:
            k, times = multiples[0]
            found = self.solve(tuple(getattr(m, k, None) for m in mods), prefer)
            if found is not None:
                self.attrs.setdefault(path, {})[k] = found.text
                return f"{times} * self.{k}"
        if hint is not None:  # a dropout layer the eval graph never calls: its rate under HF's attribute name
            for name, child in mods[0].named_children():
                if isinstance(child, torch.nn.Dropout) and _eq(child.p, value):
                    found = self.solve(tuple(m.get_submodule(name).p for m in mods), prefer)
                    if found is not None:
                        self.attrs.setdefault(path, {})[hint] = found.text
                        return f"self.{hint}"
        return None

    def roots_a_size(self, path: str) -> bool:
        """Whether the Hugging Face class at `path` divides by the root of a tensor's last size somewhere in its
        code (OpenAI GPT's `w / math.sqrt(v.size(-1))`)."""
        mods = self.modules(path)
        return bool(mods) and re.search(r"sqrt\(\s*\w+\.(size\(-1\)|shape\[-1\])\s*\)",
                                        _source(type(mods[0]), "__class__")) is not None

    def use_list(self, path: str, field_name: str, value: list) -> None:
        """The module at `path` reads a per-layer list of the config (`self.layer_types = config.layer_types`)."""
        self.use_field(field_name, value)
        self.attrs.setdefault(path, {})[field_name] = f"config.{field_name}"

    def use_field(self, field_name: str, value) -> None:
        """The config dataclass has this field (an `__init__` reads `config.<field_name>` itself)."""
        self.used.setdefault(field_name, list(value) if isinstance(value, list) else value)

    def init_lines(self, paths: list[str]) -> list[str]:
        """`self.head_dim = config.n_embd // config.n_head`: what the forward of the modules at `paths` (one class)
        reads, set first; a later one reads an earlier one (`self.scaling = self.head_dim ** -0.5`)."""
        attrs: dict[str, str] = {}
        for path in paths:
            for k, text in self.attrs.get(path, {}).items():
                attrs.setdefault(k, text)
        out: list[str] = []
        for k, text in sorted(attrs.items(), key=lambda kv: -sum(kv[1] in t for t in attrs.values())):
            for j, t in attrs.items():
                if j != k and ("//" in t or t == f"config.{j}") and f"self.{j} =" in "".join(out):
                    text = re.sub(rf"\({re.escape(t)}\)|{re.escape(t)}(?!\w)", f"self.{j}", text)  # not a longer name
            out.append(f"self.{k} = {text}")
        return out

    def dataclass_text(self) -> str:
        """The config dataclass model.py builds from (the fields it reads, config.json's values as defaults)."""
        doc = ['    """The sizes model.py reads from config.json (Hugging Face\'s names; the defaults are the '
               "exported model's)."]
        if self.literal:
            doc = ['    """The sizes this model.py is written for: every size in its classes is a literal (built from '
                   "another", "    config, it differed from Hugging Face's model there); another config.json is "
                   "refused."]
        elif self.pinned:
            doc.append(f"    {', '.join(self.pinned)}: fixed (built with others, model.py differed from Hugging "
                       "Face's).")
        doc[-1] += '"""'
        lines = ["@dataclass", f"class {self.class_name}:", *doc, ""]
        lines += [f"    {k}: {type(v).__name__} = {v!r}" if not isinstance(v, (dict, list))  # rope_parameters
                  else f"    {k}: {type(v).__name__} = field(default_factory=lambda: {v!r})"
                  for k, v in {**self.used, **self.pinned}.items()]
        lines += ["", "    @classmethod", f'    def from_json(cls, path: str) -> "{self.class_name}":',
                  '        """The fields of config.json this class has (a missing file or field: the default)."""',
                  "        if not os.path.isfile(path):",
                  "            return cls()",
                  '        with open(path, encoding="utf-8") as fh:',
                  "            data = json.load(fh)",
                  "        names = {f.name for f in fields(cls)}",
                  "        return cls(**{k: v for k, v in data.items() if k in names})"]
        if self.pinned:
            lines += ["", PINNED.format(fixed=repr(self.pinned)).rstrip("\n")]
        return "\n".join(lines)


# a Config's check of the fields it pins (`fixed`: field -> the exported value)
PINNED = '''    def __post_init__(self) -> None:
        fixed = {fixed}
        other = [f"{{k}}={{getattr(self, k)!r}} (model.py: {{v!r}})" for k, v in fixed.items() if getattr(self, k) != v]
        if other:
            raise ValueError(
                f"model.py's sizes are fixed at the exported config; this config sets {{', '.join(other)}}. "
                "Export the model again from a folder with this config.json."
            )
'''


def _tensor(model, name: str):
    owner, _, leaf = name.rpartition(".")
    try:
        t = getattr(model.get_submodule(owner), leaf, None)
    except AttributeError:
        return None
    return t if isinstance(t, torch.Tensor) else None


def _eq(a, b) -> bool:
    if not _number(a) or not _number(b):
        return False
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or a == b
    return a == b


def _square_roots(src: str) -> list[tuple[int, str]]:
    """(n, attribute) for each `math.sqrt(… math.sqrt(self.<attribute>) …)` of n roots in a forward's source."""
    return [(m.group(1).count("sqrt("), m.group(2))
            for m in re.finditer(r"((?:(?:math\.|torch\.)?sqrt\(\s*)+)self\.(\w+)\s*\)", src)]


def _first(v):
    if isinstance(v, (tuple, list)) and len(v) == 1:
        return v[0]
    return v


@functools.lru_cache(maxsize=256)
def _source(cls, method: str) -> str:
    """The source of `cls.method` ("__class__": of the whole class), or "" where Python has none."""
    try:
        return inspect.getsource(cls if method == "__class__" else getattr(cls, method))
    except (OSError, TypeError, AttributeError):
        return ""


def _param_names(cls) -> list[str] | None:
    try:
        params = list(inspect.signature(cls.__init__).parameters)[1:]
    except (TypeError, ValueError):
        return None
    return [p for p in params if p not in ("args", "kwargs")]


def _drop_defaults(text: str) -> str:
    """`nn.LayerNorm(config.n_embd, eps=1e-05)` -> `nn.LayerNorm(config.n_embd)`: a literal keyword at its default."""
    m = re.match(r"nn\.(\w+)\(", text)
    cls = getattr(torch.nn, m.group(1), None) if m else None
    if cls is None:
        return text
    params = inspect.signature(cls.__init__).parameters
    for name, p in params.items():
        if p.default is not inspect.Parameter.empty and _number(p.default):
            text = re.sub(rf", {name}=([-+.\deE]+)(?=[,)])",
                          lambda mm: "" if _eq(float(mm.group(1)), p.default) else mm.group(0), text)
    return text


def _replace(call: ast.Call, old: ast.AST, new: ast.AST) -> None:
    call.args = [new if a is old else a for a in call.args]
    for k in call.keywords:
        if k.value is old:
            k.value = new


def _paren(text: str) -> str:
    return f"({text})" if "//" in text else text
