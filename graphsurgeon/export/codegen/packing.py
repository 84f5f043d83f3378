"""Hugging Face's packed sequences in model.py: given position_ids that restart and no attention_mask, transformers
(≥ 5.25, models without a KV cache) lets each run of consecutive positions attend only to itself. Capture tags the
`attention_mask` input of such a model (graph/hf_meta.PACKS_SEQUENCES); the forward's prologue (hf_forward.prologue)
computes `packed_sequence_mask`, and each call of a mask builder is wrapped in `same_sequence(…)`."""

from __future__ import annotations

import torch.fx

from graphsurgeon.graph.hf_meta import PACKS_SEQUENCES

PACKED_INPUT = "packed_sequence_mask"  # HF's name: which packed sequence each token is in (None: not packed)


def thread(prog) -> None:
    """Record each function that builds the mask from the tagged `attention_mask` (prog.packs) and give the scopes
    from its caller up to the model `packed_sequence_mask` as an input."""
    mask = next((n for n in prog.cm.gm.graph.nodes if n.op == "placeholder" and n.meta.get(PACKS_SEQUENCES)), None)
    if mask is None:
        return
    pseudo = torch.fx.Graph().placeholder(PACKED_INPUT)
    for scope in prog.root.scopes():
        if scope.kind != "function" or mask not in scope.inputs:
            continue
        prog.packs[scope.key] = pseudo
        caller = scope.parent
        while caller is not None:
            if pseudo not in caller.inputs:
                caller.inputs.append(pseudo)
            caller = caller.parent


def wrap(writer, child, call: str) -> str:
    """The call of a mask builder, limited to packed sequences where the model packs them (else unchanged)."""
    if child.key not in writer.prog.packs:
        return call
    causal = ", causal=True" if writer.mask_form(child.outputs[0]) == "causal mask" else ""
    return f"same_sequence({call}, {writer.arg(writer.prog.packs[child.key])}{causal})"
