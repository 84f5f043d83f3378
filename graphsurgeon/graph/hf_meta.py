"""Facts capture records on graph nodes for Hugging Face conventions; code generators read them here.

* `node.meta["train_dropout_p"]` on dropout and attention (SDPA) nodes: the p Hugging Face uses in training
  (the eval graph has 0.0 for attention dropout).
* `node.meta["hf_default_of"] = "position_ids"` on the value HF computes when that input is not given.
* `node.meta["hf_packs_sequences"] = True` on the `attention_mask` input when HF, given `position_ids` and no
  attention_mask, attends only within each run of consecutive positions (packed sequences, transformers ≥ 5.25).
"""

from __future__ import annotations

import torch
import torch.fx

TRAIN_P = "train_dropout_p"
DEFAULT_OF = "hf_default_of"
PACKS_SEQUENCES = "hf_packs_sequences"


def dropout_kind(op_name: str) -> str | None:
    """"attention" for SDPA, "dropout" for any dropout op / function name, else None."""
    if op_name == "scaled_dot_product_attention":
        return "attention"
    if "dropout" in op_name:
        return "dropout"
    return None


def dropout_nodes(gm: torch.fx.GraphModule) -> list[tuple[str, torch.fx.Node]]:
    """(kind, node) for every dropout and attention node of the graph, in graph order."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            kind = dropout_kind(node.target._opname)
            if kind:
                out.append((kind, node))
    return out


def train_dropout_p(node: torch.fx.Node) -> float:
    """The p of a dropout / attention node in training: the recorded one, else the eval graph's (dropout) or 0."""
    if TRAIN_P in node.meta:
        return float(node.meta[TRAIN_P])
    if dropout_kind(getattr(node.target, "_opname", "")) == "dropout" and len(node.args) > 1:
        return float(node.args[1])
    return 0.0


def default_node(gm: torch.fx.GraphModule, name: str) -> torch.fx.Node | None:
    """The node holding Hugging Face's default for the input `name` (e.g. position_ids), if capture found one."""
    return next((n for n in gm.graph.nodes if n.meta.get(DEFAULT_OF) == name), None)


def packs_sequences(gm: torch.fx.GraphModule) -> bool:
    """Whether capture found that HF treats runs of consecutive position_ids as packed sequences (no mask given)."""
    return any(n.op == "placeholder" and n.meta.get(PACKS_SEQUENCES) for n in gm.graph.nodes)
