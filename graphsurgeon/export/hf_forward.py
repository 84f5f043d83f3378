"""The Hugging Face forward of model.py, for any code generator: signature, input defaults, outputs + loss.

`forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, return_dict=None)`
with the inputs the captured model has (encoder-decoders: decoder_input_ids after attention_mask); each optional
input defaults as Hugging Face defaults it (decoder_input_ids: labels or input_ids shifted right); `loss` is added to the
outputs when labels are given, by `hf_loss` of templates/hf_functions.py (pasted into model.py). A generator
calls `signature`, writes `prologue` first and `epilogue` last, and writes the value tagged
`meta["hf_default_of"] = "position_ids"` through `position_ids_expr` (see capture/hf_conventions.py).
"""

from __future__ import annotations

import torch

from graphsurgeon.graph.hf_meta import DEFAULT_OF, default_node, packs_sequences

HF_ORDER = ("input_ids", "attention_mask", "decoder_input_ids", "token_type_ids", "position_ids", "past_key_values",
            "labels", "use_cache")
DECODER = "decoder_input_ids"


def is_hf(cm) -> bool:
    """Captured with Hugging Face token inputs (input_ids first, the others optional: filled like input_ids, or an
    encoder-decoder's decoder_input_ids that HF derives by a shift, capture/hf_conventions.decoder_input_default)."""
    derived = {DECODER} if getattr(cm, "decoder_default", None) else set()
    return bool(cm.input_names) and cm.input_names[0] == "input_ids" and \
        set(cm.input_names[1:]) <= set(cm.optional_inputs) | derived


def forward_inputs(cm, cached: bool = False) -> list[str]:
    """The forward's parameters in Hugging Face's order: captured inputs, position_ids, labels; `cached` (a causal
    LM with a KV cache): past_key_values and use_cache."""
    if not is_hf(cm):
        return list(cm.input_names)
    names = set(cm.input_names) | ({"past_key_values", "use_cache"} if cached else set())
    if default_node(cm.gm, "position_ids") is not None:
        names.add("position_ids")
    if cm.hf_loss:
        names.add("labels")
    return [n for n in HF_ORDER if n in names]


def signature(cm, cached: bool = False) -> str:
    """`input_ids, attention_mask=None, …` (a plain module's inputs are all required)."""
    names = forward_inputs(cm, cached)
    if not is_hf(cm):
        return ", ".join(names)
    return ", ".join([n if i == 0 else f"{n}=None" for i, n in enumerate(names)] + ["return_dict=None"])


def prologue(cm, cached: bool = False) -> list[str]:
    """Lines that give every captured optional input Hugging Face's default; `cached`: a KVCache per attention layer
    (KV_LAYERS) when use_cache or past_key_values, and the mask and positions of the new tokens after the cached."""
    if not is_hf(cm):
        return []
    lines = []
    if packs_sequences(cm.gm):
        lines += ["packed_sequence_mask = None  # Hugging Face: restarting position_ids and no mask are packed sequences",
                  "if attention_mask is None and position_ids is not None:",
                  "    packed_sequence_mask = find_packed_sequence_indices(position_ids.expand(input_ids.shape[0], -1))"]
    if cached:
        lines += ["past_length = past_key_values[0][0].shape[2] if past_key_values else 0  # tokens already seen",
                  "caches = None",
                  "if use_cache or past_key_values:  # a plain cache: one (key, value) per attention layer",
                  "    caches = [KVCache(past) for past in past_key_values or [None] * len(KV_LAYERS)]",
                  "for path, cache in zip(KV_LAYERS, caches or [None] * len(KV_LAYERS)):",
                  "    self.get_submodule(path).kv_cache = cache"]
    for name in cm.input_names[1:]:
        if name == DECODER:
            lines += _decoder_default(cm)
            continue
        fill = cm.optional_inputs[name]
        if cached and name == "attention_mask":  # the mask covers the cached tokens too
            lines += [f"if {name} is None:", "    attention_mask = torch.ones(input_ids.shape[0], past_length + "
                      "input_ids.shape[1], dtype=torch.long, device=input_ids.device)  # Hugging Face's default"]
            continue
        lines += [f"if {name} is None:", f"    {name} = torch.{fill}_like(input_ids)  # Hugging Face's default"]
    if cached and "position_ids" in forward_inputs(cm, cached):
        lines += ["if position_ids is None and past_length:  # the new tokens come after the cached ones",
                  "    position_ids = torch.arange(past_length, past_length + input_ids.shape[1], "
                  "device=input_ids.device)[None]"]
    return lines


def _decoder_default(cm) -> list[str]:
    """decoder_input_ids as HF derives them: labels shifted right (BART-like models: input_ids when no labels)."""
    spec = cm.decoder_default
    sources = [s for s in spec["sources"] if s != "labels" or "labels" in forward_inputs(cm)]
    shift = f"shift_right({{}}, start={spec['start']}, pad={spec['pad']})"
    lines = [f"if {DECODER} is None:  # Hugging Face's default: " + " or ".join(sources) + " shifted right"]
    if sources == ["labels", "input_ids"]:
        return lines + [f"    {DECODER} = {shift.format('labels if labels is not None else input_ids')}"]
    if sources == ["labels"]:
        return lines + ["    if labels is None:",
                        f'        raise ValueError("{cm.model_class} needs decoder_input_ids or labels (Hugging Face '
                        'derives decoder_input_ids from labels only)")',
                        f"    {DECODER} = {shift.format('labels')}"]
    return lines + [f"    {DECODER} = {shift.format(sources[0])}"]


def position_ids_expr(node: torch.fx.Node, default_expr: str) -> str:
    """The expression for a value tagged as an input's default: the input when given, else the default."""
    name = node.meta.get(DEFAULT_OF)
    return f"{name} if {name} is not None else {default_expr}" if name else default_expr


def epilogue(cm, outputs: dict[str, str], cached: bool = False) -> list[str]:
    """The return: a ModelOutput {output name: expression} (read as out["logits"], out.logits or out[0], as Hugging
    Face's outputs are) with `loss` first when labels are given; `return_dict=False` returns its tuple."""
    body = "ModelOutput({" + ", ".join(f"{k!r}: {v}" for k, v in outputs.items()) + "})"
    if not is_hf(cm):
        return [f"return {body}"]
    lines = [f"outputs = {body}"]
    if "labels" in forward_inputs(cm):
        lines += ["if labels is not None:  # the loss Hugging Face computes from these logits",
                  '    outputs = ModelOutput({"loss": hf_loss(outputs["logits"], labels, **LOSS), **outputs})']
    if cached:
        lines += ["if caches is not None:  # every attention layer's keys and values, for the next call",
                  '    outputs["past_key_values"] = [(cache.key, cache.value) for cache in caches]']
    return lines + ["return outputs.to_tuple() if return_dict is False else outputs  # Hugging Face's return_dict"]


def constants(cm) -> dict:
    """Module-level constants model.py's functions read (LOSS for hf_loss)."""
    return {"LOSS": cm.hf_loss}
