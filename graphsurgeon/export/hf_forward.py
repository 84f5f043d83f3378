"""The Hugging Face forward of model.py, for any code generator: signature, input defaults, outputs + loss.

`forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, return_dict=None)`
with the inputs the captured model has; each optional input defaults as Hugging Face defaults it; `loss` is added to the
outputs when labels are given, by `hf_loss` of templates/hf_functions.py (pasted into model.py). A generator
calls `signature`, writes `prologue` first and `epilogue` last, and writes the value tagged
`meta["hf_default_of"] = "position_ids"` through `position_ids_expr` (see capture/hf_conventions.py).
"""

from __future__ import annotations

import torch

from graphsurgeon.graph.hf_meta import DEFAULT_OF, default_node, packs_sequences

HF_ORDER = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "labels")


def is_hf(cm) -> bool:
    """Captured with Hugging Face token inputs (input_ids first, the others optional)."""
    return bool(cm.input_names) and cm.input_names[0] == "input_ids" and set(cm.input_names[1:]) <= set(cm.optional_inputs)


def forward_inputs(cm) -> list[str]:
    """The forward's parameters in Hugging Face's order: captured inputs, position_ids, labels."""
    if not is_hf(cm):
        return list(cm.input_names)
    names = set(cm.input_names)
    if default_node(cm.gm, "position_ids") is not None:
        names.add("position_ids")
    if cm.hf_loss:
        names.add("labels")
    return [n for n in HF_ORDER if n in names]


def signature(cm) -> str:
    """`input_ids, attention_mask=None, …` (a plain module's inputs are all required)."""
    names = forward_inputs(cm)
    if not is_hf(cm):
        return ", ".join(names)
    return ", ".join([n if i == 0 else f"{n}=None" for i, n in enumerate(names)] + ["return_dict=None"])


def prologue(cm) -> list[str]:
    """Lines that give every captured optional input Hugging Face's default."""
    if not is_hf(cm):
        return []
    lines = []
    if packs_sequences(cm.gm):
        lines += ["packed_sequence_mask = None  # Hugging Face: restarting position_ids and no mask are packed sequences",
                  "if attention_mask is None and position_ids is not None:",
                  "    packed_sequence_mask = find_packed_sequence_indices(position_ids.expand(input_ids.shape[0], -1))"]
    for name in cm.input_names[1:]:
        fill = cm.optional_inputs[name]
        lines += [f"if {name} is None:", f"    {name} = torch.{fill}_like(input_ids)  # Hugging Face's default"]
    return lines


def position_ids_expr(node: torch.fx.Node, default_expr: str) -> str:
    """The expression for a value tagged as an input's default: the input when given, else the default."""
    name = node.meta.get(DEFAULT_OF)
    return f"{name} if {name} is not None else {default_expr}" if name else default_expr


def epilogue(cm, outputs: dict[str, str]) -> list[str]:
    """The return: a ModelOutput {output name: expression} (read as out["logits"], out.logits or out[0], as Hugging
    Face's outputs are) with `loss` first when labels are given; `return_dict=False` returns its tuple."""
    body = "ModelOutput({" + ", ".join(f"{k!r}: {v}" for k, v in outputs.items()) + "})"
    if not is_hf(cm):
        return [f"return {body}"]
    lines = [f"outputs = {body}"]
    if "labels" in forward_inputs(cm):
        lines += ["if labels is not None:  # the loss Hugging Face computes from these logits",
                  '    outputs = ModelOutput({"loss": hf_loss(outputs["logits"], labels, **LOSS), **outputs})']
    return lines + ["return outputs.to_tuple() if return_dict is False else outputs  # Hugging Face's return_dict"]


def constants(cm) -> dict:
    """Module-level constants model.py's functions read (LOSS for hf_loss)."""
    return {"LOSS": cm.hf_loss}
