"""The fast attention path, read from the graph: which masks only SDPA reads (the mask builder may then return None
when nothing is padded, and SDPA runs with `is_causal` and no mask tensor), grouped-query attention's repeated
keys and values (SDPA reads the unrepeated ones with `enable_gqa=True`), and which models generate."""

from __future__ import annotations

import torch
import torch.fx

from graphsurgeon.export.codegen import lift

SDPA = torch.ops.aten.scaled_dot_product_attention.default


def sdpa_masks(prog) -> set:
    """Mask values every live reader of which is an SDPA call's `attn_mask` (they may be None: no padding)."""
    out = set()
    for node, users in prog.users.items():
        if users and all(u.op == "call_function" and u.target is SDPA and prog.rep(_attn_mask(u)) is node
                         and sum(prog.rep(a) is node for a in u.all_input_nodes) == 1 for u in users):
            out.add(node)
    return out


def _attn_mask(node):
    return node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")


def repeat_kv(emitted: list, canon: dict) -> dict:
    """Grouped-query attention's repeated keys and values (`x[:, :, None].expand(b, kv, n, s, d).reshape(b, kv*n, s,
    d)`) read only by SDPA: the SDPA call reads x and is written with `enable_gqa=True` (lift._sdpa)."""
    out = {}

    def follow(v):
        while v in canon:
            v = canon[v]
        return v

    for node in emitted:
        if node.op != "call_function" or node.target is not SDPA:
            continue
        for r in node.args[1:3]:
            r = follow(r)
            e = follow(r.args[0]) if isinstance(r, torch.fx.Node) and lift.op_key(r) in ("reshape", "view") else None
            u = follow(e.args[0]) if isinstance(e, torch.fx.Node) and lift.op_key(e) == "expand" else None
            ok = isinstance(u, torch.fx.Node) and lift.op_key(u) == "unsqueeze" and u.args[1] == 2
            if not ok or any(len(v.users) != 1 for v in (e, u)) or any(user.target is not SDPA for user in r.users):
                continue
            x, y = u.args[0].meta.get("val"), r.meta.get("val")
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dim() == 4 and y.dim() == 4:
                out[r] = u.args[0]
    return out


def generates(cm) -> bool:
    """Whether model.py has generate(): a causal LM that takes HF's keyword inputs and token ids of any length (each
    step feeds one more token)."""
    from graphsurgeon.export.hf_forward import is_hf

    return is_causal_lm(cm) and is_hf(cm) and _grows(cm)


def is_causal_lm(cm) -> bool:
    """A model that predicts the next token (its logits read only earlier tokens). XLM's and Flaubert's
    `…WithLMHeadModel` are masked LMs (HF's generate() appends their mask token to predict it)."""
    if cm.model_class.endswith("WithLMHeadModel"):
        return False
    return cm.model_class.endswith(("LMHeadModel", "ForCausalLM")) or (
        "logits" in cm.output_names and bool(cm.config and cm.config.get("is_decoder", False)))


def _grows(cm) -> bool:
    """Whether the captured model takes token ids of any length (a sequence fixed at capture cannot grow)."""
    ids = next((n for n in cm.gm.graph.nodes if n.op == "placeholder" and n.name == "input_ids"), None)
    val = ids.meta.get("val") if ids is not None else None
    return isinstance(val, torch.Tensor) and val.dim() == 2 and isinstance(val.shape[1], torch.SymInt)
