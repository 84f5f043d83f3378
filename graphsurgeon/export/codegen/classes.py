"""One class per distinct block kind, one function per distinct function group.

Module calls whose code is the same (compared with positional names, so what their values are called does
not matter) share one class. A LoRA that only some layers have does not split them: LoRA lines (the add onto
a q/k/v slice) are left out of the comparison and written once, behind `if hasattr(...)` when not every layer
has them, and a wrapped projection (`LoRALinear`) is compared as the layer it wraps; the model's `add_lora`
builds what a class's `__init__` does not. `__init__` builds the module tree in the captured model's
registration order: torch.nn layers, the generated classes, `nn.ModuleList` for numbered layers, and the
module's own parameters and buffers (shapes from the captured tensors; values come from model.safetensors, but for
the non-persistent buffers `init_buffers` computes from the config: codegen/buffers.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from graphsurgeon.export.codegen import fastpath, forms
from graphsurgeon.export.codegen.buffers import Buffers
from graphsurgeon.export.codegen.lora_sizes import lora_ctor
from graphsurgeon.export.codegen.config import ConfigSizes
from graphsurgeon.export.codegen import leaves as leaves_mod
from graphsurgeon.export.codegen import scopes as scopes_mod
from graphsurgeon.export.codegen.scopes import Scope
from graphsurgeon.graph.hf_meta import dropout_kind, train_dropout_p
from graphsurgeon.export.codegen.body import Body, Env, Line
from graphsurgeon.export.codegen.sizes import symbols
from graphsurgeon.export.codegen.writer import FunctionWriter

HELPERS = ("Conv1D", "LoRA", "LoRALinear", "LoRAConv1D", "LoRAConv1x1")
LORA_PARTS = {"lora_A", "lora_B", "lora_dropout"}
TORCH_NAMES = {"Module", "ModuleList", "Linear", "Embedding", "LayerNorm", "Dropout", "GELU", "SiLU", "ReLU"}


@dataclass
class ClassDef:
    name: str
    path: str  # module path of the first instance
    instances: list[Scope]  # its module calls (none: a module that only holds tensors)
    key: tuple = ()  # what instances must share
    varying: list[str] = field(default_factory=list)  # own tensors whose shape differs by instance: __init__ args
    init: list[str] = field(default_factory=list)  # __init__ body lines
    init_buffers: list[str] = field(default_factory=list)  # init_buffers' body: buffers computed from the config
    body: Body | None = None  # forward (None when never called)


@dataclass
class FunctionDef:
    name: str
    instances: list[Scope]
    key: str
    body: Body | None = None


class Model:
    """The whole model as generated classes and functions (nothing here is text of the file yet)."""

    def __init__(self, cm, tensors: dict[str, torch.Tensor], buffers: set[str],
                 tied: dict[str, str] | None = None) -> None:
        self.cm = cm
        self.prog = scopes_mod.build(cm)
        self.tensors, self.buffers = tensors, buffers
        # tied name -> its tensor: a module holding only shared tensors (a head tied to the embedding) is built too,
        # for tie_weights to share them into
        self.tied = {name: tensors[source] for name, source in (tied or {}).items() if source in tensors}
        self.children: dict[str, list[str]] = {"": []}
        for path in self._paths():
            self._add_path(path)
        _order_children(self.children, cm.module_classes)
        self.lists = {p for p, kids in self.children.items()
                      if p and kids and all(k.rpartition(".")[2].isdigit() for k in kids)}
        self.env = Env(self.prog, self.lists)
        self.config = self.env.config = ConfigSizes(cm)  # sizes as expressions of the config
        self.recipes = Buffers(cm, self.config, tensors, buffers)  # buffers init_buffers computes, not saved
        self.calls: dict[str, list[Scope]] = {}  # module path -> the scopes calling it
        for s in self.prog.root.scopes():
            if s.kind in ("module", "lora"):
                self.calls.setdefault(s.path, []).append(s)
                leaf = leaves_mod.recognise(self.prog, s)
                if leaf is not None and _leaf_fits(self.prog, s, leaf):
                    self.env.leaves[s.key] = leaf
        for s in self.prog.root.scopes()[::-1]:  # children first: an nn.Sequential of torch.nn layers is one layer
            if s.path in self.lists and s.key not in self.env.leaves:
                leaf = leaves_mod.sequential(s, self.env.leaves)
                if leaf is not None:
                    self.env.leaves[s.key] = leaf
        self._sizes()
        self.functions: list[FunctionDef] = []
        self.kv_paths: list[str] = []  # the modules that keep a KV cache, in the order they run
        self.generates = False  # a causal LM taking HF's inputs: model.py has generate()
        self.classes: list[ClassDef] = []
        self.class_of_path: dict[str, ClassDef] = {}
        self._build()

    def _sizes(self) -> None:
        """Sizes a scope needs that none of its input tensors has (`batch` for a mask built from position ids)."""
        for s in self.prog.root.scopes()[::-1]:
            if s.kind == "root" or s.key in self.env.leaves:
                continue
            need: list = []
            for item in s.items:
                if isinstance(item, Scope):
                    need += [k for k in item.sizes if k not in need]
                else:
                    symbols(item, need, self.prog)
            have = {str(d.node.expr) for v in s.inputs if isinstance(v.meta.get("val"), torch.Tensor)
                    for d in v.meta["val"].shape if isinstance(d, torch.SymInt)}
            have |= _data_dependent(s.nodes())
            s.sizes = [k for k in need if k not in have]

    # ---- module tree ---------------------------------------------------------------------------
    def _paths(self) -> list[str]:
        out = [name.rpartition(".")[0] for name in [*self.tensors, *self.tied]]
        out += [s.path for s in self.prog.root.scopes() if s.kind in ("module", "lora")]
        return out

    def _add_path(self, path: str) -> None:
        while path:
            parent = path.rpartition(".")[0]
            kids = self.children.setdefault(parent, [])
            self.children.setdefault(path, [])
            if path in kids:
                return
            kids.append(path)
            path = parent

    def leaf_at(self, path: str):
        for s in self.calls.get(path, []):
            if s.key in self.env.leaves:
                return self.env.leaves[s.key]
        return None

    def under_leaf(self, path: str) -> bool:
        """True when an ancestor of `path` is a torch.nn layer (its parts are built by that layer or its owner)."""
        parent = path.rpartition(".")[0]
        while parent:
            if self.leaf_at(parent) is not None or self._uncalled_layer(parent) is not None:
                return True
            parent = parent.rpartition(".")[0]
        return False

    # ---- building ----------------------------------------------------------------------------------
    def _build(self) -> None:
        bottom_up = _post_order(self.prog.root)
        self._mask_forms(bottom_up)
        self._kv_layers()
        for s in bottom_up:
            if s.kind == "function":
                self._function(s)
        for path in self.children:
            if path and path not in self.lists and path not in self.calls and not self.under_leaf(path) \
                    and self._uncalled_layer(path) is None:
                self._class_for(path, None)  # never called: it only holds tensors or other modules
        for s in bottom_up:
            if s.kind == "module" and s.key not in self.env.leaves:
                self._class_for(s.path, s)
        self.root = ClassDef(_unique(self.cm.model_class, self._taken()), "", [self.prog.root])
        for c in self.classes:  # one class for layers that differ only in their tensors' shapes
            shapes = [self._own(s.path) for s in c.instances]
            c.varying = [leaf for leaf in shapes[0] if len({tuple(sh[leaf].shape) for sh in shapes}) > 1] \
                if shapes else []
        for f in self.functions:
            f.body = FunctionWriter(self.env, f.instances[0]).write(fixed=self._param_names(f.instances))
            fast = f.instances[0].outputs[0] in self.env.masks if f.instances[0].outputs else False
            f.body = forms.shorter(f.instances[0], f.body, fast) or f.body
        for c in self.classes:
            c.body = _merge(self._variants(c)) if c.instances else None
            paths = [s.path for s in c.instances]
            c.init = self.config.init_lines(paths) + self._merged_init(paths or [c.path])
            c.init_buffers = self.recipes.lines_of(c.path)
            if any(s.key in self.env.kv for s in c.instances):
                c.init.append("self.kv_cache: KVCache | None = None  # its keys and values so far, while generating")
        self.root.init = []  # root_section writes it after the root's forward (a loop there may set a list's count)

    def _kv_layers(self) -> None:
        """A causal LM whose attentions are all SDPA calls gets a KV cache: env.kv, the module scope owning each
        attention -> the key and value it reads (those of earlier tokens are put in front of them)."""
        self.generates = fastpath.generates(self.cm)
        if not self.generates or self.cm.kv_cache_off:
            return
        found = {}
        for att in self.cm.semantics().attentions:
            core = att.core
            if core.op != "call_function" or core.target is not fastpath.SDPA or core not in self.prog.owner:
                return
            scope = self.prog.owner[core]
            while scope is not None and (scope.kind != "module" or scope.key in self.env.leaves):
                scope = scope.parent
            if scope is None or scope.kind != "module" or scope.key in found:
                return
            found[scope.key] = tuple(self.prog.rep(a, scope) for a in core.args[1:3])  # as that scope reads them
        self.env.kv = found
        self.kv_paths = [s.path for s in self.prog.root.scopes() if s.key in found]

    def _mask_forms(self, scopes: list[Scope]) -> None:
        """The mask builders (function groups of a known form) whose only readers are SDPA calls: env.masks."""
        readers = fastpath.sdpa_masks(self.prog)
        for s in scopes:
            if s.kind != "function" or len(s.outputs) != 1 or s.outputs[0] not in readers:
                continue
            try:
                form = forms.form_of(s, FunctionWriter(self.env, s).write())
            except (KeyError, NotImplementedError):  # a group that calls others: no mask form
                continue
            if form is not None:
                self.env.masks[s.outputs[0]] = form

    def _variants(self, c: ClassDef) -> list[Body]:
        """The forward of each instance whose code differs (by its LoRA lines), each written once, instances in
        order: [first instance, …] repeated so `_merge` can count which lines every instance has."""
        bodies: dict[tuple, Body] = {}
        out = []
        fixed = self._param_names(c.instances)
        for s in c.instances:
            shapes = tuple(tuple(self._own(s.path)[k].shape) for k in c.varying)
            key = (_text(FunctionWriter(self.env, s, canonical=True).write()), shapes)
            if key not in bodies:
                bodies[key] = FunctionWriter(self.env, s).write(fixed=fixed)
            out.append(bodies[key])
        return out

    def _param_names(self, instances: list[Scope]) -> list[str]:
        """Each parameter's name: what most calls call the value they pass (`hidden_states`, not the first
        layer's `inputs_embeds`)."""
        wanted = [FunctionWriter(self.env, s).param_names() for s in instances]
        out: list[str] = []
        for i in range(len(wanted[0])):
            votes = [w[i] for w in wanted if i < len(w)]
            last = {n: j for j, n in enumerate(votes)}  # a tie goes to later calls (the first layer reads embeddings)
            best = max(votes, key=lambda n: (votes.count(n), last[n]))
            k, name = 1, best
            while name in out:
                k += 1
                name = f"{best}_{k}"
            out.append(name)
        return out

    def _taken(self) -> set[str]:
        return {c.name for c in self.classes} | set(HELPERS) | {f.name for f in self.functions} | TORCH_NAMES

    def _function(self, s: Scope) -> None:
        self.env.training[s.key] = any(n.op == "call_function" and (
            dropout_kind(getattr(n.target, "_opname", "")) == "dropout"
            or (dropout_kind(getattr(n.target, "_opname", "")) == "attention" and train_dropout_p(n) > 0))
            for n in s.nodes())
        key = _text(FunctionWriter(self.env, s, canonical=True).write())
        for f in self.functions:
            if f.key == key:
                f.instances.append(s)
                self.env.function_names[s.key] = f.name
                return
        name = _unique(s.cls, self._taken())
        self.env.function_names[s.key] = name
        self.functions.append(FunctionDef(name, [s], key))

    def _class_for(self, path: str, s: Scope | None) -> None:
        if s is None:
            cls = self.cm.module_classes.get(path, "Holder")
            key = ("holder", path)
        else:
            cls = s.cls
            key = (cls, _text(FunctionWriter(self.env, s, canonical=True).write(), base_only=True),
                   tuple(self._init_lines(path, base=True, key=True)))
        for c in self.classes:
            if c.key == key:
                c.instances.append(s)
                self.env.class_names[s.key] = c.name
                self.class_of_path[path] = c
                return
        name = _unique(cls if cls not in TORCH_NAMES else f"{cls}Block", self._taken())
        c = ClassDef(name, path, [s] if s is not None else [], key)
        self.classes.append(c)
        if s is not None:
            self.env.class_names[s.key] = name
        self.class_of_path[path] = c

    # ---- __init__ ---------------------------------------------------------------------------------
    def ctor(self, path: str, base: bool = False, key: bool = False) -> str:
        """The constructor call that builds the module at `path` (key=True: with every tensor shape, for grouping)."""
        leaf = self.leaf_at(path)
        if leaf is not None and leaf.kind == "lora":  # a slice's LoRA: no Hugging Face module at its path
            return lora_ctor(self.config, leaf.lora.target, leaf.ctor)
        if leaf is not None:
            return self.config.ctor(path, (leaf.base_ctor or leaf.ctor) if base else leaf.ctor)
        layer = self._uncalled_layer(path)
        if layer is not None:
            block = next((b for b in self.cm.loras.values() if scopes_mod.lora_export_name(b) == path), None)
            return lora_ctor(self.config, block.target, layer) if layer.startswith("LoRA(") and block is not None \
                else self.config.ctor(path, layer)
        if path in self.lists and path not in self.class_of_path:  # a list with a forward has its class
            kids = [self.ctor(k, base, key) for k in self.children[path]]
            if all(k == kids[0] for k in kids):
                count = self.config.count(path, len(kids)) if path in self.env.looped else str(len(kids))
                return f"nn.ModuleList([{kids[0]} for _ in range({count})])"  # a config's count: only if looped
            by_kind = self._layer_classes(path, kids)
            return by_kind or "nn.ModuleList([" + ", ".join(kids) + "])"
        c = self.class_of_path.get(path)
        if c is None:
            return "nn.Module()"
        own = self._own(path)
        if key:
            return f"{c.name}({', '.join(['config'] + [f'{k}={tuple(t.shape)}' for k, t in own.items()])})"
        shapes = [self.config.shape(f"{path}.{k}", tuple(own[k].shape)) for k in c.varying]  # config expressions
        args = ["(" + ", ".join(d) + ("," if len(d) == 1 else "") + ")" for d in shapes]
        return f"{c.name}({', '.join(['config'] + args)})"

    def _layer_classes(self, path: str, kids: list[str]) -> str | None:
        """`nn.ModuleList([{"dense": Layer, "sparse": Layer2}[kind](config) for kind in config.mlp_layer_types])`
        for a looped list of several classes named by a config list (statements._class_kinds), else None."""
        found = self.env.layer_classes.get(path)
        if found is None:
            return None
        field, first = found
        ctors = {kind: kids[int(p.rpartition(".")[2])] for kind, p in first.items()}
        if not all(re.fullmatch(r"\w+\(config\)", c) for c in ctors.values()):
            return None
        self.config.use_field(field, self.cm.config[field])
        table = ", ".join(f"{kind!r}: {c.removesuffix('(config)')}" for kind, c in ctors.items())
        return f"nn.ModuleList([{{{table}}}[kind](config) for kind in config.{field}])"

    def _own(self, path: str) -> dict[str, torch.Tensor]:
        """The tensors the module at `path` holds itself, by attribute name."""
        return {n.rpartition(".")[2]: t for n, t in self.tensors.items() if n.rpartition(".")[0] == path}

    def _uncalled_layer(self, path: str) -> str | None:
        """A torch.nn layer nobody calls (a shared embedding read through another module, a LoRA Layer not wired
        yet): built from its tensors."""
        if path in self.calls:
            return None
        for block in self.cm.loras.values():
            if not block.add_node and scopes_mod.lora_export_name(block) == path:
                t, c = block.target, block.config
                return f"LoRA({t.in_features}, {t.out_features}, r={c.r}, scaling={float(c.scaling)!r})"
        if self.children.get(path):
            return None
        own = {n.rpartition(".")[2]: t for n, t in [*self.tensors.items(), *self.tied.items()]
               if n.rpartition(".")[0] == path}
        cls, w = self.cm.module_classes.get(path), own.get("weight")
        if w is None or w.dtype != torch.float32:
            return None
        if cls == "Embedding" and set(own) == {"weight"} and w.dim() == 2:
            return f"nn.Embedding({w.shape[0]}, {w.shape[1]})"
        if cls == "Linear" and set(own) <= {"weight", "bias"} and w.dim() == 2:
            return f"nn.Linear({w.shape[1]}, {w.shape[0]}{'' if 'bias' in own else ', bias=False'})"
        return None

    def _init_lines(self, path: str, base: bool = False, key: bool = False) -> list[tuple[str, str]]:
        """(attribute, line) pairs of the __init__ of the module at `path` (key=True: own shapes left out)."""
        lines = []
        c = self.class_of_path.get(path)
        varying = set(c.varying) if c is not None and not key else set()
        for kid in self.children.get(path, []):
            attr = kid.rpartition(".")[2]
            lines.append((f"self.{attr}", _assign("self", attr, self.ctor(kid, base, key))))
            leaf = self.leaf_at(kid)
            for sub in self.children.get(kid, []) if leaf is not None and leaf.kind != "sequential" else []:
                name = sub.rpartition(".")[2]
                sub_leaf = self.leaf_at(sub)
                if name in LORA_PARTS or sub_leaf is None or (base and sub_leaf.lora is not None):
                    continue
                owner = f"self[{attr}]" if attr.isdigit() else f"self.{attr}"
                text = lora_ctor(self.config, sub_leaf.lora.target, sub_leaf.ctor) if sub_leaf.kind == "lora" \
                    else self.config.ctor(sub, sub_leaf.ctor)
                lines.append((f"self.{attr}.{name}", _assign(owner, name, text)))
        for name, t in self.tensors.items():
            owner, _, leaf_name = name.rpartition(".")
            if owner != path:
                continue
            shape = "(" + ", ".join(self.config.shape(name, tuple(t.shape))) + ("," if t.dim() == 1 else "") + ")"
            if key or leaf_name in varying:
                shape = f"{leaf_name}_shape"
            dtype = "" if t.dtype == torch.float32 else f", dtype={t.dtype}"
            empty = f"torch.empty({shape}{dtype})"
            if name in self.recipes.computed:  # one call computes the module's buffers (the recipes part of its key)
                recipe = "; ".join(self.recipes.lines_of(path)) if key else ""
                if "init_buffers" not in dict(lines):
                    lines.append(("init_buffers", f"self.init_buffers(config){recipe}"))
            elif name in self.buffers:
                why = f"  # {self.recipes.kept[name]}" if name in self.recipes.kept else ""
                lines.append((leaf_name, f'self.register_buffer("{leaf_name}", {empty}){why}'))
            else:
                lines.append((leaf_name, f"self.{leaf_name} = nn.Parameter({empty})"))
        return lines

    def root_init(self) -> list[str]:
        """The root class's __init__ lines (after its forward is written)."""
        return self.config.init_lines([""]) + self._merged_init([""])

    def _merged_init(self, paths: list[str]) -> list[str]:
        """What every instance builds alike; a LoRA only some instances have is left to `add_lora`."""
        per = [dict(self._init_lines(p)) for p in paths]
        base = dict(self._init_lines(paths[0], base=True))
        keys: list[str] = []
        for d in per:
            keys += [k for k in d if k not in keys]
        out = []
        for k in keys:
            texts = {d.get(k) for d in per}
            if len(texts) == 1 and None not in texts:
                out.append(texts.pop())
            elif k in base:
                out.append(base[k])
        return out


def _assign(owner: str, name: str, ctor: str) -> str:
    """The line that registers module `ctor` as `owner`'s child `name` (numbered children: add_module)."""
    return f'{owner}.add_module("{name}", {ctor})' if name.isdigit() else f"{owner}.{name} = {ctor}"


def _post_order(scope: Scope) -> list[Scope]:
    """Children before their parent, siblings in the order they run."""
    out = []
    for item in scope.items:
        if isinstance(item, Scope):
            out += _post_order(item)
    return out + [scope]


def _order_children(children: dict[str, list[str]], modules) -> None:
    """Each module's children in registration order (`modules`: named_modules' order). A child named_modules lists
    only once (OpenAI GPT's one activation shared by every layer) takes its place among an alike module's children,
    so alike layers keep alike classes."""
    order = {p: i for i, p in enumerate(modules)}
    alike: dict[str, list[str]] = {}  # a path with its list indices as '#' -> its children's names in order
    for parent, kids in children.items():
        kids.sort(key=lambda p: (order.get(p, len(order)), _natural(p)))
        if all(k in order for k in kids):
            alike.setdefault(_pattern(parent), [k.rpartition(".")[2] for k in kids])
    for parent, kids in children.items():
        names = alike.get(_pattern(parent))
        if names and not all(k in order for k in kids):
            kids.sort(key=lambda p: (names.index(p.rpartition(".")[2]) if p.rpartition(".")[2] in names
                                     else len(names), _natural(p)))


def _pattern(path: str) -> str:
    return ".".join("#" if part.isdigit() else part for part in path.split("."))


def _natural(path: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def _leaf_fits(prog, scope: Scope, leaf) -> bool:
    """A leaf is called with one tensor and returns its last value (its input seen as the scope reads it: a no-op
    cast made in another scope is its input, NanoChat's `.type_as(x)` before q_proj)."""
    ins = [i for i in scope.inputs if i.op != "get_attr"]
    return len(scope.outputs) == 1 and scope.outputs[0] is scope.items[-1] and ins == [prog.rep(leaf.input, scope)]


def _text(body: Body, base_only: bool = False) -> str:
    lines = [ln for ln in body.lines if not (base_only and ln.optional)]
    return "\n".join(["(" + ", ".join(body.params) + ")"] + ["  " * ln.depth + ln.text for ln in lines]
                     + ["return " + ", ".join(body.returns)])


def _merge(bodies: list[Body]) -> Body:
    """The first instance's forward plus the LoRA lines any instance has (guarded when not all have them)."""
    first = bodies[0]
    optional: list[Line] = []
    for b in bodies:
        for ln in b.lines:
            if ln.optional and not any((o.anchor, o.text) == (ln.anchor, ln.text) for o in optional):
                optional.append(ln)
    optional.sort(key=lambda o: o.anchor)
    lines: list[Line] = []

    def place(upto: int) -> None:
        while optional and optional[0].anchor <= upto:
            o = optional.pop(0)
            have = sum(1 for b in bodies if any(x.optional and (x.anchor, x.text) == (o.anchor, o.text) for x in b.lines))
            if have == len(bodies):
                lines.append(o)
            else:
                owner, _, attr = o.optional.rpartition(".")
                lines.append(Line(f'if hasattr(self{"." + owner if owner else ""}, "{attr}"):', o.depth, o.blocks,
                                  o.optional, o.anchor))
                lines.append(Line(o.text, o.depth + 1, o.blocks, o.optional, o.anchor, o.comment))

    others = [[x for x in b.lines if not x.optional] for b in bodies]
    for i, ln in enumerate(x for x in first.lines if not x.optional):
        place(ln.anchor)
        if any(i < len(o) and o[i].comment != ln.comment for o in others):  # sizes differ by layer: no comment
            ln = Line(ln.text, ln.depth, ln.blocks, ln.optional, ln.anchor)
        lines.append(ln)
    place(10 ** 9)
    return Body(first.params, lines, first.returns, first.training)


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    k = 2
    while f"{name}{k}" in taken:
        k += 1
    return f"{name}{k}"


def _data_dependent(nodes: list) -> set[str]:
    """Size symbols torch.export made while running these ops (u0: a number read from a tensor, the length of a
    slice it bounds): the scope computes them itself, no caller can pass them."""
    out: set[str] = set()
    for n in nodes:
        val = n.meta.get("val")
        dims = [val] if isinstance(val, torch.SymInt) else list(val.shape) if isinstance(val, torch.Tensor) else []
        for d in dims:
            if isinstance(d, torch.SymInt):
                out |= {str(x) for x in d.node.expr.free_symbols if str(x).startswith("u")}
    return out
