"""Generate a standalone `model.py` (torch + safetensors only) from a captured model's fx graph.

Codegen style (decided here): one `forward` written from the fx graph node by node as exact
`torch.ops.aten.<op>.<overload>(...)` calls with a shape comment per tensor line; the module tree is
rebuilt from the state-dict names (so `model.safetensors` keys match the Hugging Face ones, lists of
layers become `nn.ModuleList` so code reads `self.transformer.h[0].attn.c_attn.weight`); every inserted
LoRA branch is one call to the small `LoRALayer` class. Each repeated layer (a child of a numbered list,
h.0 … h.N) whose nodes are contiguous becomes a method of its own class; layers whose generated code is
identical share one class (names inside a layer are normalised so h.0 and h.11 compare equal).
"""

from __future__ import annotations

import math
import operator
import re

import torch
import torch.fx

from graphsurgeon.export.hf_forward import position_ids_expr
from graphsurgeon.graph.hf_meta import DEFAULT_OF, dropout_kind, train_dropout_p
from graphsurgeon.graph.meta import tensor_meta

aten = torch.ops.aten

_SKIP_TARGETS = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size", "_assert_async",
                 "sym_constrain_range"}
_INFIX = {operator.mul: "*", operator.add: "+", operator.sub: "-", operator.floordiv: "//", operator.truediv: "/",
          operator.mod: "%"}


def lora_export_name(block) -> str:
    """Module path of a LoRA block in the exported tree: the target `T`, or `<fused module>.<role>` for a slice."""
    t = block.target
    return f"{t.module}.{t.role}" if t.is_slice else t.module


def _access(path: str, lists: set[str]) -> str:
    """Python expression for module/parameter `path` under `self` (list containers indexed: h[0])."""
    out, seen = "self", []
    for part in path.split("."):
        parent = ".".join(seen)
        out += f"[{part}]" if parent in lists and part.isdigit() else f".{part}"
        seen.append(part)
    return out


def _list_containers(names: list[str]) -> set[str]:
    """Module paths whose children are all numbered 0..n-1 (written as nn.ModuleList)."""
    children: dict[str, set[str]] = {}
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            children.setdefault(".".join(parts[: i - 1]) if i > 1 else "", set()).add(parts[i - 1])
    lists = set()
    for parent, kids in children.items():
        if kids and all(k.isdigit() for k in kids) and sorted(int(k) for k in kids) == list(range(len(kids))):
            lists.add(parent)
    return lists


class _Emitter:
    """Writes the body of forward() from the graph."""

    def __init__(self, cm, param_names: dict[str, str], lists: set[str]) -> None:
        self.cm, self.param_names, self.lists = cm, param_names, lists
        self.lines: list[str] = []
        self.names: dict[torch.fx.Node, str] = {}
        self.device_var = "_device"

    def arg(self, a) -> str:
        if isinstance(a, torch.fx.Node):
            return self.names[a]
        if isinstance(a, (list, tuple)):
            inner = ", ".join(self.arg(x) for x in a)
            return f"[{inner}]" if isinstance(a, list) else (f"({inner},)" if len(a) == 1 else f"({inner})")
        if isinstance(a, torch.device):
            return self.device_var
        if isinstance(a, torch.dtype):
            return str(a)
        if isinstance(a, (torch.memory_format, torch.layout)):
            return str(a)
        if isinstance(a, float):
            if math.isinf(a):
                return "float('inf')" if a > 0 else "float('-inf')"
            if math.isnan(a):
                return "float('nan')"
            return repr(a)
        if isinstance(a, (int, bool, str)) or a is None:
            return repr(a)
        raise NotImplementedError(f"model.py codegen cannot write the argument {a!r} ({type(a).__name__})")

    def comment(self, node: torch.fx.Node) -> str:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            m = tensor_meta(val, self.cm.dims)
            return f"  # {m.shape_text}" + ("" if m.dtype == "float32" else f" {m.dtype}")
        if isinstance(val, (tuple, list)) and val and all(isinstance(v, torch.Tensor) for v in val):
            return "  # " + ", ".join(tensor_meta(v, self.cm.dims).shape_text for v in val)
        return ""

    def emit(self, node: torch.fx.Node, name: str, expr: str) -> None:
        self.names[node] = name
        self.lines.append(f"{name} = {expr}{self.comment(node)}")

    def call(self, node: torch.fx.Node) -> str:
        fn = node.target
        if fn is operator.getitem:
            return f"{self.arg(node.args[0])}[{self.arg(node.args[1])}]"
        if fn in _INFIX:
            return f"{self.arg(node.args[0])} {_INFIX[fn]} {self.arg(node.args[1])}"
        if fn is aten.sym_size.int:
            return f"{self.arg(node.args[0])}.size({node.args[1]})"
        args = [self.arg(a) for a in node.args]
        kwargs = {k: self.arg(v) for k, v in node.kwargs.items()}
        kind = dropout_kind(getattr(fn, "_opname", ""))
        if kind == "dropout":  # Hugging Face's p in training (graph/hf_meta.py), off in eval
            args[1:3] = [repr(train_dropout_p(node)), "self.training"]
        elif kind == "attention" and train_dropout_p(node) > 0:
            p = f"{train_dropout_p(node)!r} if self.training else 0.0"
            if len(args) > 4:
                args[4] = f"({p})"
            else:
                kwargs["dropout_p"] = p
        args += [f"{k}={v}" for k, v in kwargs.items()]
        if isinstance(fn, torch._ops.OpOverload):
            ns = fn.namespace
            qual = f"torch.ops.{ns}.{fn._opname}.{fn._overloadname}"
        elif getattr(fn, "__module__", "") in ("math", "_operator", "operator"):
            qual = f"operator.{fn.__name__}" if fn.__module__ != "math" else f"math.{fn.__name__}"
        else:
            raise NotImplementedError(f"model.py codegen cannot write the call {node.format_node()}")
        return f"{qual}({', '.join(args)})"


def _emitted(cm, skip: set[str]) -> list[torch.fx.Node]:
    """Nodes that become a line of code, in graph order."""
    out = []
    for node in cm.gm.graph.nodes:
        if node.name in skip or node.op in ("placeholder", "get_attr", "output"):
            continue
        if node.op == "call_module" and node.target == "_guards_fn":
            continue
        fn_name = getattr(node.target, "_opname", getattr(node.target, "__name__", ""))
        if node.op == "call_function" and (fn_name in _SKIP_TARGETS or (not node.users and "assert" in str(node.target))):
            continue
        out.append(node)
    return out


def _line(cm, em: _Emitter, node: torch.fx.Node, name: str, adds: dict, names: dict, lora_access) -> None:
    if node.op == "call_module":
        raise NotImplementedError(f"model.py codegen cannot write the module call {node.format_node()}")
    if node.target is getattr(torch.ops.higher_order, "wrap_with_set_grad_enabled", None):
        _grad_region(cm, em, node, name)
        return
    if node.name in adds:
        block = adds[node.name]  # base + LoRA(x); the LoRA's output takes the target's shape (= the base's shape)
        t, x, base = names[block.target.target_node], names[block.target.input_node], names[block.onto]
        em.emit(node, name, f"{em.names[base]} + {lora_access(lora_export_name(block))}({em.names[x]}, {em.names[t]})")
    else:
        em.emit(node, name, em.call(node))


def _grad_region(cm, em: _Emitter, node: torch.fx.Node, name: str) -> None:
    """Inline a `wrap_with_set_grad_enabled(enabled, submod, *args)` region as a `with torch.set_grad_enabled(...)` block."""
    enabled, sub_node, *operands = node.args
    sub = cm.gm.get_submodule(sub_node.target)
    inner = _Emitter(cm, {}, set())
    inner.device_var = em.device_var
    places = [n for n in sub.graph.nodes if n.op == "placeholder"]
    for ph, op in zip(places, operands):
        inner.names[ph] = em.arg(op)
    result = None
    for sn in sub.graph.nodes:
        if sn.op == "call_function":
            inner.emit(sn, f"{name}_{sn.name}", inner.call(sn))
        elif sn.op == "output":
            result = sn.args[0]
        elif sn.op != "placeholder":
            raise NotImplementedError(f"model.py codegen cannot write {sn.format_node()} inside {node.name}")
    em.lines.append(f"with torch.set_grad_enabled({enabled!r}):")
    em.lines += ["    " + ln for ln in inner.lines]
    em.names[node] = name
    em.lines.append(f"{name} = {inner.arg(tuple(result) if isinstance(result, (list, tuple)) else result)}")


def _layer_of(blocks, node, layer_paths: set[str]) -> str | None:
    for path in blocks.chain.get(node, ()):
        if path in layer_paths:
            return path
    return None


def _local_name(node: torch.fx.Node, counters: dict[str, int]) -> str:
    """A name that depends only on the op and its rank within the layer (so identical layers give identical code)."""
    base = re.sub(r"_\d+$", "", node.name)
    k = counters.get(base, 0)
    counters[base] = k + 1
    return base if k == 0 else f"{base}_{k}"


def _layer_code(cm, layer: str, nodes: list[torch.fx.Node], lists: set[str], adds: dict, names: dict, skip: set):
    """(signature inputs, output nodes, body lines) of one repeated layer as a method of its own class."""
    region = set(nodes)
    em = _Emitter(cm, {}, set())
    inputs: list[torch.fx.Node] = []
    prefix = layer + "."
    sub_lists = {p[len(prefix):] for p in lists if p.startswith(prefix)}

    def rel_access(path: str) -> str:
        return _access(path[len(prefix):], sub_lists) if path.startswith(prefix) else None

    counters: dict[str, int] = {}
    for node in nodes:
        reads = ([names[adds[node.name].target.target_node], names[adds[node.name].target.input_node]]
                 if node.name in adds else node.all_input_nodes)
        for a in reads:
            if a in region or a in em.names:
                continue
            if a.op == "get_attr" and rel_access(a.target):
                em.names[a] = rel_access(a.target)
                continue
            em.names[a] = f"x{len(inputs)}"
            inputs.append(a)
    em.device_var = next((em.names[a] for a in inputs if isinstance(a.meta.get("val"), torch.Tensor)), "None") + ".device"
    for node in nodes:
        local = f"{adds[node.name].path.rpartition('.')[2]}_add" if node.name in adds else _local_name(node, counters)
        _line(cm, em, node, local, adds, names,
              lambda path: rel_access(path) or _access(path, lists))
    outputs = [n for n in nodes if any(u not in region and u.name not in skip for u in n.users)]
    return inputs, outputs, em


def forward_body(cm):
    """(forward body lines, output expressions, list containers, layer classes source, layer path -> class)."""
    graph = cm.gm.graph
    names = {n.name: n for n in graph.nodes}
    lists = _list_containers([k for k, _ in cm.gm.named_parameters(remove_duplicate=False)]
                             + [k for k, _ in cm.gm.named_buffers(remove_duplicate=False)]
                             + [lora_export_name(b) + ".lora_A.weight" for b in cm.loras.values()])
    skip: set[str] = set()
    adds: dict[str, object] = {}
    for block in cm.loras.values():
        skip.update(n for n in block.nodes if n != block.add_node)
        if block.add_node:
            adds[block.add_node] = block
    emitted = _emitted(cm, skip)
    blocks = cm.blocks()
    layer_paths = {f"{lst}.{k}" for lst in lists for k in cm.gm.get_submodule(lst)._modules} if lists else set()
    owner = {n: _layer_of(blocks, n, layer_paths) for n in emitted}
    runs: dict[str, list] = {}
    for i, n in enumerate(emitted):
        if owner[n]:
            runs.setdefault(owner[n], []).append(i)
    layers = {p: [emitted[i] for i in idx] for p, idx in runs.items() if idx[-1] - idx[0] + 1 == len(idx)}

    em = _Emitter(cm, {}, lists)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node in placeholders:
        em.names[node] = node.name
    for node in graph.nodes:
        if node.op == "get_attr":
            em.names[node] = _access(node.target, lists)
    if placeholders:
        em.lines.append(f"{em.device_var} = {placeholders[0].name}.device")

    classes: dict[str, str] = {}  # generated class source -> class name
    class_src: list[str] = []
    layer_class: dict[str, str] = {}
    first_of = {nodes[0]: p for p, nodes in layers.items()}
    in_layer = {n for nodes in layers.values() for n in nodes}
    for node in emitted:
        if node in first_of:
            path = first_of[node]
            inputs, outputs, lem = _layer_code(cm, path, layers[path], lists, adds, names, skip)
            ret = ", ".join(lem.names[o] for o in outputs)
            sig = ", ".join(f"x{i}" for i in range(len(inputs)))
            doc = [f"# x{i}: " + (tensor_meta(a.meta["val"], cm.dims).shape_text
                                  if isinstance(a.meta.get("val"), torch.Tensor) else "int (a size)")
                   for i, a in enumerate(inputs)]
            body = [f"    def forward(self, {sig}):"] + ["        " + d for d in doc] + [
                "        " + ln for ln in lem.lines] + [f"        return {ret}"]
            code = "\n".join(body)
            if code not in classes:
                base = cm.module_classes.get(path, "Layer")
                name = base if base not in classes.values() else f"{base}{len(classes)}"
                classes[code] = name
                class_src.append(f"class {name}(nn.Module):\n"
                                 f'    """One {base} (written once, used by every layer with identical code)."""\n\n'
                                 + code + "\n")
            layer_class[path] = classes[code]
            outs = [f"{o.name}" for o in outputs]
            for o in outputs:
                em.names[o] = o.name
            args = ", ".join(em.arg(a) for a in inputs)
            em.lines.append(f"{', '.join(outs)} = {_access(path, lists)}({args})")
            continue
        if node in in_layer:
            continue
        _line(cm, em, node, node.name, adds, names, lambda path: _access(path, lists))
        if DEFAULT_OF in node.meta:  # an optional input (position_ids): the given one, else HF's default computed here
            name, _, expr = em.lines[-1].partition(" = ")
            em.lines[-1] = f"{name} = {position_ids_expr(node, expr)}"
    out_node = next(n for n in graph.nodes if n.op == "output")
    flat = out_node.args[0]
    flat = list(flat) if isinstance(flat, (tuple, list)) else [flat]
    return em.lines, [em.arg(v) for v in flat], lists, "\n\n".join(class_src), layer_class
