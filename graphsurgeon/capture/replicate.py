"""Capture one block per layer kind, replicate the rest: capture cost independent of depth.

torch.export traces every layer of a model, so capturing is linear in depth (~0.3 s a layer). Most layers of a
stack are the same code on the same shapes with other weights, so this module

1. finds the layer stacks of the model (ModuleLists of numbered layers) and each layer's *kind* — its module
   structure (classes, parameter shapes and dtypes, plain attributes such as `attention_type` or
   `sliding_window`) and the per-layer config values (`layer_types`, …): alternating local / global attention,
   MoE every k-th layer and a dense first layer become kinds of their own;
2. builds a shrunk-depth twin of the model: the same config with the layer counts cut to the shortest prefix
   holding two layers of every repeated kind (per-layer config lists cut alike), sharing the full model's tensors,
   and checks its layers have the kinds of the full model's first layers;
3. captures the twin, and `replicate_graph.expand` grows its graph to full depth (after checking the captured
   layers of each kind are isomorphic), with the full model's weights attached.

Anything that cannot be shown alike raises `NotReplicable`; the caller then captures the full model and says why in
the capture notes.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from graphsurgeon.capture.meta_init import skip_meta_init
from graphsurgeon.capture.tree_depth import COUNT_FIELD as _COUNT_FIELD

MIN_GAIN = 1  # replicate only when at least this many layers are saved


class NotReplicable(Exception):
    """Why a model's layers cannot be captured once and replicated (one sentence for the capture notes)."""


@dataclass
class Stack:
    """One layer stack of the full model."""

    path: str  # the ModuleList's path: "model.layers"
    kinds: list[int]  # layer index -> kind id (equal ids: the same module structure and per-layer config)
    keep: int = 0  # layers of the twin: the shortest prefix holding two layers of every repeated kind

    @property
    def length(self) -> int:
        return len(self.kinds)


@dataclass
class Plan:
    """What the twin keeps of each stack, and its config."""

    stacks: list[Stack]
    config: object  # the twin's config (a deep copy of the model's, layer counts and per-layer lists cut)
    changed: list[str] = field(default_factory=list)  # config fields cut: "num_hidden_layers 80 → 2"

    def summary(self) -> str:
        return ", ".join(f"{s.path}: {s.keep} of {s.length} layers captured" for s in self.stacks)


_LAYER_INDEX_ATTR = re.compile(r"(^|_)(layer_?(idx|id|index|number|num)|idx)$")


def find_stacks(model: torch.nn.Module) -> dict[str, torch.nn.ModuleList]:
    """ModuleLists of ≥ 3 numbered layers, outermost only (an MoE layer's experts are part of its layer)."""
    found: dict[str, torch.nn.ModuleList] = {}
    for path, module in model.named_modules():
        if any(path.startswith(p + ".") for p in found):
            continue
        if isinstance(module, torch.nn.ModuleList) and len(module) >= 3 and any(True for _ in module[0].parameters()):
            found[path] = module
    return found


def layer_signature(layer: torch.nn.Module) -> tuple:
    """What makes two layers the same kind: module classes, tensor shapes and dtypes, plain attributes
    (the layer's own index aside)."""
    items = []
    for path, m in layer.named_modules():
        attrs = tuple(sorted((k, v) for k, v in vars(m).items()
                             if _kind_attr(k) and isinstance(v, (bool, int, float, str, type(None)))))
        tensors = tuple((n, tuple(t.shape), t.dtype) for n, t in [*m._parameters.items(), *m._buffers.items()]
                        if t is not None)  # what named_parameters / named_buffers(recurse=False) list, read directly
        items.append((path, type(m).__qualname__, attrs, tensors))
    return tuple(items)


@lru_cache(maxsize=4096)
def _kind_attr(name: str) -> bool:
    """Whether a plain attribute of that name tells layer kinds apart (not private, not the layer's own index)."""
    return not name.startswith("_") and name != "training" and not _LAYER_INDEX_ATTR.search(name)


def _configs(config) -> list:
    """The config and every sub-config it holds (text_config, vision_config, encoder, decoder …)."""
    out, todo, seen = [], [config], set()
    while todo:
        c = todo.pop()
        if c is None or id(c) in seen or not hasattr(c, "to_dict"):
            continue
        seen.add(id(c))
        out.append(c)
        todo.extend(v for v in vars(c).values() if hasattr(v, "to_dict") and hasattr(v, "model_type"))
    return out


def _per_layer_lists(config, lengths: set[int]) -> dict[tuple[int, str], list]:
    """Config lists with one entry per layer (`layer_types`, GPT-Neo's `attention_layers`), by (config id, key)."""
    out = {}
    for c in _configs(config):
        for key, value in vars(c).items():
            if isinstance(value, (list, tuple)) and len(value) in lengths and not key.startswith("_") \
                    and all(isinstance(v, (str, int, float, bool, type(None))) for v in value):
                out[(id(c), key)] = list(value)
    return out


def plan(model: torch.nn.Module) -> Plan | None:
    """The twin to capture, or None when no stack is deep enough to gain anything (capture the model itself)."""
    config = getattr(model, "config", None)
    modules = find_stacks(model)
    if config is None or not modules:
        return None
    lengths = {len(m) for m in modules.values()}
    lists = _per_layer_lists(config, lengths)
    stacks = []
    for path, mlist in modules.items():
        per_layer = [v for v in lists.values() if len(v) == len(mlist)]
        ids: dict[tuple, int] = {}
        kinds = [ids.setdefault((layer_signature(layer), tuple(v[i] for v in per_layer)), len(ids))
                 for i, layer in enumerate(mlist)]
        stacks.append(Stack(path, kinds, _keep(kinds)))
    keep_by_len: dict[int, int] = {}
    for s in stacks:
        keep_by_len[s.length] = max(keep_by_len.get(s.length, 0), s.keep)
    for s in stacks:
        s.keep = keep_by_len[s.length]
    if all(s.length - s.keep < MIN_GAIN for s in stacks):
        unlike = next((s for s in stacks if len(set(s.kinds)) == s.length), None)
        if unlike is not None:  # say why a deep model is slow to capture
            raise NotReplicable(f"no two layers of {unlike.path} are alike ({_first_difference(modules[unlike.path])})")
        return None
    twin_config = copy.deepcopy(config)
    changed = _cut_config(twin_config, keep_by_len)
    counts = {f.split(" ")[0] for f in changed if "→" in f and "[" not in f}
    if not counts:
        raise NotReplicable("no config field holds the number of layers, so a shallower twin cannot be built")
    return Plan(stacks, twin_config, changed)


def _first_difference(mlist: torch.nn.ModuleList) -> str:
    """What first tells layers 0 and 1 apart: "attn.scaling 0.25 ≠ 0.125"."""
    for (path, cls, attrs, tensors), (_p, cls1, attrs1, tensors1) in zip(layer_signature(mlist[0]), layer_signature(mlist[1])):
        where = path or "the layer"
        if cls != cls1:
            return f"{where} is a {cls} in one and a {cls1} in the other"
        for (k, v), (_k, v1) in zip(attrs, attrs1):
            if v != v1:
                return f"{where}.{k} is {v} in layer 0 and {v1} in layer 1"
        if attrs != attrs1 or tensors != tensors1:
            return f"{where} holds other attributes or tensors"
    return "their per-layer config values differ"


def _keep(kinds: list[int]) -> int:
    """The shortest prefix with two layers of every kind that repeats and the one layer of every kind that doesn't."""
    need = 2
    for kind in set(kinds):
        where = [i for i, k in enumerate(kinds) if k == kind]
        need = max(need, (where[1] if len(where) > 1 else where[0]) + 1)
    return min(need, len(kinds))


def _cut_config(config, keep_by_len: dict[int, int]) -> list[str]:
    """Cut layer counts and per-layer lists of `config` (and its sub-configs) in place; what changed, as text."""
    changed = []
    for c in _configs(config):
        for key, value in list(vars(c).items()):
            if key.startswith("_"):
                continue
            if type(value) is int and value in keep_by_len and _COUNT_FIELD.search(key):
                setattr(c, key, keep_by_len[value])
                changed.append(f"{key} {value} → {keep_by_len[value]}")
            elif isinstance(value, (list, tuple)) and len(value) in keep_by_len \
                    and all(isinstance(v, (str, int, float, bool, type(None))) for v in value):
                setattr(c, key, type(value)(value[:keep_by_len[len(value)]]))
                changed.append(f"{key}[:{keep_by_len[len(value)]}]")
    return changed


def build_twin(model: torch.nn.Module, the_plan: Plan) -> torch.nn.Module:
    """The shrunk-depth twin on the meta device, holding the full model's tensors under the same names; raises
    NotReplicable when its layers are not the full model's first layers or its other modules differ."""
    hooked = next((p for p, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks), None)
    if hooked is not None:
        raise NotReplicable(f"{hooked or 'the model'} has forward hooks, which a twin built from the config would not have")
    attn = getattr(model, "_graphsurgeon_attn", None) or getattr(model.config, "_attn_implementation", None)
    cls = type(model)
    try:
        with torch.device("meta"), skip_meta_init():
            if hasattr(cls, "_from_config"):
                twin = cls._from_config(the_plan.config, attn_implementation=attn)
            else:
                twin = cls(the_plan.config)
    except Exception as err:  # noqa: BLE001 - the model's code refused the cut config
        raise NotReplicable(f"the model cannot be built with fewer layers ({type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0][:120] if str(err).strip() else ''})") from err
    twin.train(model.training)
    stacks = find_stacks(twin)
    for s in the_plan.stacks:
        mine = stacks.get(s.path)
        if mine is None and s.keep < 3:
            mine = twin.get_submodule(s.path)  # a twin of 2 layers is not a "stack" to find_stacks
        if mine is None or len(mine) != s.keep:
            raise NotReplicable(f"the shallower twin's {s.path} does not have {s.keep} layers")
        full = model.get_submodule(s.path)
        for i in range(s.keep):
            if layer_signature(mine[i]) != layer_signature(full[i]):
                raise NotReplicable(f"layer {s.path}.{i} of the shallower twin differs from the model's")
    _share_tensors(twin, model, {s.path for s in the_plan.stacks})
    return twin


def _share_tensors(twin: torch.nn.Module, model: torch.nn.Module, stack_paths: set[str]) -> None:
    """Give the twin the full model's tensors by name (so its capture sees the same weights, dtypes and devices);
    everything outside the stacks must have the same structure."""
    full = {n: (type(m).__qualname__) for n, m in model.named_modules() if not _in(n, stack_paths)}
    mine = {n: (type(m).__qualname__) for n, m in twin.named_modules() if not _in(n, stack_paths)}
    if full != mine:
        diff = sorted(set(full.items()) ^ set(mine.items()))[:1]
        raise NotReplicable(f"the shallower twin's modules outside the layer stacks differ ({diff[0][0] or 'root'})")
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    for name, t in [*twin.named_parameters(remove_duplicate=False), *twin.named_buffers(remove_duplicate=False)]:
        new = params.get(name, buffers.get(name))
        if new is None or new.shape != t.shape or new.dtype != t.dtype:
            raise NotReplicable(f"the shallower twin's tensor {name} is not the model's")
        owner_path, _, leaf = name.rpartition(".")
        owner = twin.get_submodule(owner_path) if owner_path else twin
        if leaf in owner._parameters:
            owner._parameters[leaf] = new
        else:
            owner._buffers[leaf] = new


def _in(path: str, prefixes: set[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)
