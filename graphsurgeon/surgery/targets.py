"""LoRA targets: from each attention op back through shape-only ops to the projection (graph/semantics/dataflow).

Names are used only as a fallback when the graph has no attention op.
"""

from __future__ import annotations

import re
import weakref

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.graph.semantics.cores import attention_operands
from graphsurgeon.graph.semantics.dataflow import (layer_index, module_of, overlapping, projection, trace_back,
                                                   why_untraced)
from graphsurgeon.surgery.spec import Target

ROLES = ("q", "k", "v")
_FALLBACK_NAMES = {"q": ("query", "q_proj", "q_lin", "wq"), "k": ("key", "k_proj", "k_lin", "wk"),
                   "v": ("value", "v_proj", "v_lin", "wv")}


class TargetError(GraphsurgeonError):
    """A target (role, layer, tensor) does not exist or cannot be adapted."""


_FOUND: dict[int, tuple] = {}  # id(cm) -> (weak reference, {(version, roles, LoRA adds): targets})


def find_targets(cm, roles=ROLES) -> list[Target]:
    """Q/K/V targets by dataflow from every attention op (names only when no attention op exists).

    Remembered per captured model until its next edit (`cm.version`), so the editor may ask on every drag.
    """
    lora_adds = {b.add_node for b in cm.loras.values()}
    key = (cm.version, tuple(roles), frozenset(lora_adds))
    ref, known = _FOUND.get(id(cm), (None, None))
    if ref is None or ref() is not cm:
        known = {}
        _FOUND[id(cm)] = (weakref.ref(cm, lambda _, k=id(cm): _FOUND.pop(k, None)), known)
    if key not in known:
        known.clear()
        known[key] = _find(cm, roles, lora_adds)
    return list(known[key])


def _find(cm, roles, lora_adds) -> list[Target]:
    targets: list[Target] = []
    hits_of: dict[Target, dict] = {}
    seen: set[tuple[str, str]] = set()
    attention = attention_operands(cm.gm)
    memo: dict = {}
    for attn, operands in attention:
        attn_path = module_of(attn)[0]
        hits = {r: trace_back(operands[r], lora_adds, memo=memo) for r in ROLES if r in operands}
        shared = overlapping(hits)  # q and k reading the same columns cannot be adapted apart
        for role in roles:
            hit = hits.get(role)
            if hit is None or role in shared or (hit["target"].name, role) in seen:
                continue
            seen.add((hit["target"].name, role))
            targets.append(_make(hit, role, attn_path))
            hits_of[targets[-1]] = hit
    targets = _every_call(cm, _whole_when_split(targets, hits_of))
    if not targets and not attention:
        for t in projection_targets(cm):
            leaf = t.module.rsplit(".", 1)[-1]
            for role in roles:
                if leaf in _FALLBACK_NAMES.get(role, ()):
                    targets.append(Target(**{**t.as_dict(), "role": role}))
    return sorted(targets, key=lambda t: (t.layer if t.layer is not None else -1, ROLES.index(t.role) if t.role in ROLES else 9))


def _whole_when_split(targets: list[Target], hits_of: dict) -> list[Target]:
    """One attention module that reads a role's projection as parts, each in its own attention call (DiffLlama's
    two halves of v, one per attention map): one target on the whole projection when the parts cover it, as PEFT
    adapts it (one LoRA per block path: two parts would be two LoRAs on one path)."""
    groups: dict[tuple, list[Target]] = {}
    for t in targets:
        groups.setdefault((t.attention, t.role, t.module), []).append(t)
    out: list[Target] = []
    for group in groups.values():
        if len(group) > 1 and _covers(group, [hits_of[t] for t in group]):
            hit = hits_of[group[0]]
            whole = dict(hit, target=hit["projection"], columns=None, width=hit["out_features"], layout=None)
            group = [_make(whole, group[0].role, group[0].attention)]
        out += group
    return out


def _every_call(cm, targets: list[Target]) -> list[Target]:
    """A whole projection traced from one of its calls gets a target at every call of its module (PegasusX's q_proj
    on the tokens and on the global states, whose keys reach the attention through a concatenation): one LoRA that
    every call applies, as PEFT adapts the module."""
    whole = {t.module: t for t in targets if t.columns is None}
    if not whole:
        return targets
    have = {t.target_node for t in targets}
    extra = [call for t in whole.values() for call in _whole_calls(cm, t) if call.target_node not in have]
    return targets + extra


def _whole_calls(cm, target: Target) -> list[Target]:
    """A target on the whole output of `target.module` at each of its calls, in graph order (the rule of one LoRA
    per module: every call of a projection's module applies its LoRA)."""
    out = []
    for node in cm.gm.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op != "call_function" or not stack or list(stack.values())[-1][0] != target.module:
            continue  # a projection's output sits in its module's call
        hit = projection(node)
        if hit is not None and hit["module"] == target.module and hit["kind"] == target.kind:
            out.append(_make(dict(hit, target=node, columns=None, width=hit["out_features"]), target.role,
                             target.attention))
    return out


def calls_of(cm, target: Target) -> list[Target]:
    """`target` at every call of its module, in graph order (the same graph whichever call the LoRA was dropped on):
    a LoRA belongs to its module, so PEFT's adapter and the merged weights apply it wherever the module runs. A call
    where the same columns cannot be found (a fused projection whose slice is traced at one call only) raises one
    TargetError naming the module and the call."""
    if target.columns is None:
        calls = _whole_calls(cm, target)
    else:  # a slice of a fused projection: the same columns traced at every call
        whole = _whole_calls(cm, Target(**{**target.as_dict(), "columns": None}))
        if len(whole) < 2:
            return [target]  # the module runs once (traced again only when it runs more often)
        calls = [t for t in find_targets(cm) if t.module == target.module and t.role == target.role
                 and t.columns == target.columns]
        traced = {t.input_node for t in calls}
        missing = next(((i, t) for i, t in enumerate(whole, 1) if t.input_node not in traced), None)
        if missing is not None:
            raise TargetError(f"{target.module} runs {len(whole)} times per forward and a LoRA applies at every call "
                              f"of it (as PEFT and merged weights do), but its call {missing[0]} "
                              f"({missing[1].target_node}) has no {target.role} columns {target.column_text} to "
                              f"adapt as this call has; adapt the whole projection "
                              f"(--targets {projection_name(target.module)}) instead.")
    given = [t for t in calls if t.target_node == target.target_node] or \
        [t for t in calls if t.input_node == target.input_node]
    if len(given) != 1:
        return [target]  # not found among its module's calls (an edited graph): the target alone, as given
    return [target if t is given[0] else t for t in calls]


def per_module(targets: list[Target]) -> list[Target]:
    """One target per LoRA (module, role, columns): a LoRA inserted on it is inserted at every call of its module
    (`calls_of`), so the other calls' targets would adapt the same module twice."""
    seen: set[tuple] = set()
    out = []
    for t in targets:
        key = (t.module, t.role, t.columns)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _covers(group: list[Target], hits: list[dict]) -> bool:
    """True when the targets are disjoint column sets of one Linear / Conv1D output that together are all of it."""
    columns = [c for t in group for c in (t.columns or ())]
    return hits[0]["kind"] != "conv1x1" and all(t.columns is not None for t in group) \
        and all(h["projection"] is hits[0]["projection"] for h in hits) \
        and len(set(columns)) == len(columns) == hits[0].get("out_features", -1) \
        and set(columns) == set(range(len(columns)))


def _make(hit: dict, role: str, attention: str | None) -> Target:
    return Target(layer=layer_index(hit["module"]), role=role, module=hit["module"], kind=hit["kind"],
                  target_node=hit["target"].name, input_node=hit["x"].name, in_features=hit["in_features"],
                  out_features=hit["width"], columns=hit["columns"], attention=attention, layout=hit.get("layout"))


def projection_targets(cm) -> list[Target]:
    """Every whole Linear/Conv1D output in the graph, role = the module's attribute name ("c_proj", "fc1")."""
    out = []
    for node in cm.gm.graph.nodes:
        hit = projection(node)
        if hit is not None:
            out.append(_make(dict(hit, target=node, columns=None, width=hit["out_features"]),
                             projection_name(hit["module"]), None))
    return out


def projection_name(module: str) -> str:
    """What --targets calls a projection: its attribute name ("c_proj"), with its owner's when it is a numbered
    child ("ffn.0" for ffn = nn.Sequential(...); PEFT's target_modules match it the same way, as a path suffix)."""
    parts = module.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


_LAYER_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")  # "3" or "0-5"


def layer_spec(spec: str | None) -> list[tuple[int, int]] | None:
    """The layer ranges a --layers text names, (lo, hi) both included: None for 'all' (or None); bad syntax raises."""
    if spec is None or str(spec).strip() == "all":
        return None
    text = str(spec).strip()
    if not text:
        raise TargetError("--layers is empty: give all, a range like 0-5 or a list like 0,3.")
    ranges: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        m = _LAYER_ITEM.match(part)
        if m is None:
            what = ("has an empty item" if not part else "is not a layer number" if part == text else
                    f"has {part!r}, which is not a layer number")
            raise TargetError(f"--layers {text!r} {what}; give all, a range like 0-5 or a list like 0,3 "
                              "(layers count from 0).")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise TargetError(f"--layers {part!r} is a reversed range: write {hi}-{lo} "
                              "(a range goes from the lower layer to the higher, both included).")
        ranges.append((lo, hi))
    return ranges


def parse_layers(spec: str | None, n_layers: int) -> list[int]:
    """'all' (or None) | '0-5' | '0,3' | '0-2,5' -> sorted layer indices of a model with `n_layers` layers."""
    ranges = layer_spec(spec)
    if ranges is None:
        return list(range(n_layers))
    if n_layers == 0:
        raise TargetError(f"--layers {str(spec).strip()!r} names layers, but this model has no numbered (repeated) "
                          "layers; use --layers all.")
    top = max(hi for _, hi in ranges)  # checked before the ranges are expanded (0-999999999 stays cheap)
    if top >= n_layers:
        first = min(max(lo, n_layers) for lo, hi in ranges if hi >= n_layers)
        raise TargetError(f"layer {first} is out of range: this model has layers 0-{n_layers - 1}.")
    return sorted({i for lo, hi in ranges for i in range(lo, hi + 1)})


def resolve_targets(cm, roles=("q", "v"), layers: str | list[int] | None = "all") -> list[Target]:
    """Targets for roles (q/k/v, or a projection's attribute name like c_proj) on the chosen layers."""
    roles = tuple(r.strip() for r in roles if r.strip())
    qkv = [r for r in roles if r in ROLES]
    found = find_targets(cm, tuple(qkv)) if qkv else []
    others = [r for r in roles if r not in ROLES]
    if others:
        explicit = projection_targets(cm)
        known = {t.role for t in explicit}
        for r in others:
            if r not in known:
                raise TargetError(f"unknown target {r!r}: use q, k, v or a projection name ({', '.join(sorted(known))}).")
        found += [t for t in explicit if t.role in others]
    all_layers = sorted({t.layer for t in found if t.layer is not None})
    n = (max(all_layers) + 1) if all_layers else 0
    chosen = set(layers) if isinstance(layers, (list, tuple, set)) else set(parse_layers(layers, n))
    if isinstance(layers, (list, tuple, set)):
        bad = sorted(i for i in chosen if i not in all_layers)
        if bad:
            has = f"this model has layers 0-{n - 1}" if n else "this model has no numbered (repeated) layers"
            raise TargetError(f"layer {bad[0]} is out of range: {has}.")
    every = layers is None or (isinstance(layers, str) and layers.strip() == "all")  # targets outside repeated blocks (pooler, lm_head) only with "all"
    result = [t for t in found if (t.layer is None and every) or t.layer in chosen]
    missing = [r for r in qkv if not any(t.role == r for t in result)]
    if missing:
        raise TargetError(why_missing(cm, missing[0]) if not any(t.role == missing[0] for t in found) else
                          f"no {missing[0]!r} projection in the chosen layers; this model has layers 0-{n - 1}.")
    return result


def why_missing(cm, role: str) -> str:
    """One sentence: the model type, what was found instead of `role`'s projection, and what LoRA can target."""
    model_type = (cm.config or {}).get("model_type")
    what = f"{model_type} ({cm.model_class})" if model_type else cm.model_class
    names = list(dict.fromkeys(t.role for t in projection_targets(cm)))
    offer = f"LoRA targets: {', '.join(names)} (pass them to --targets)" if names else "it has no Linear/Conv1D projection"
    attention = attention_operands(cm.gm)
    if not attention:
        return f"{what} has no attention (no scaled_dot_product_attention, no matmul → softmax → matmul); {offer}."
    lora_adds = {b.add_node for b in cm.loras.values()}
    for attn, operands in attention:
        hits = {r: trace_back(operands[r], lora_adds) for r in ROLES if r in operands}
        shared = overlapping(hits)
        if role in shared:
            reason = f"{role} and {shared[role]} read the same columns of {hits[role]['module']}"
        elif role in operands and hits.get(role) is None:
            reason = why_untraced(operands[role], lora_adds)
        else:
            continue
        where = module_of(attn)[0] or attn.name
        return f"{what}: the {role} of its attention ({where}) cannot be isolated: {reason}; {offer}."
    return f"{what}: no {role!r} projection was found behind its attention ops; {offer}."
