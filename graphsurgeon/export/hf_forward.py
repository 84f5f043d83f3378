"""The Hugging Face forward of model.py, for any code generator: signature, input defaults, outputs + loss.

`forward(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, return_dict=None)`
with the inputs the captured model has (encoder-decoders: decoder_input_ids after attention_mask); each optional
input defaults as Hugging Face defaults it (decoder_input_ids: labels or input_ids shifted right); `loss` is added to the
outputs when labels are given, by `hf_loss` of templates/hf_functions.py (pasted into model.py). A generator
calls `signature`, writes `prologue` first and `epilogue` last, and writes the value tagged
`meta["hf_default_of"] = "position_ids"` through `position_ids_expr` (see capture/hf_conventions.py).
"""

from __future__ import annotations

import inspect

import torch

from graphsurgeon.graph.hf_meta import DEFAULT_OF, default_node, packs_sequences
from graphsurgeon.graph.semantics.dataflow import module_of

HF_ORDER = ("input_ids", "attention_mask", "decoder_input_ids", "token_type_ids", "position_ids", "past_key_values",
            "inputs_embeds", "labels", "use_cache", "output_hidden_states", "logits_to_keep")
DECODER = "decoder_input_ids"


def is_hf(cm) -> bool:
    """Captured with Hugging Face token inputs (input_ids first, the others optional: filled like input_ids, or an
    encoder-decoder's decoder_input_ids that HF derives by a shift, capture/hf_conventions.decoder_input_default)."""
    derived = {DECODER} if getattr(cm, "decoder_default", None) else set()
    return bool(cm.input_names) and cm.input_names[0] == "input_ids" and \
        set(cm.input_names[1:]) <= set(cm.optional_inputs) | derived


def forward_inputs(cm, cached: bool = False, keeps_logits: bool = False) -> list[str]:
    """The forward's parameters in Hugging Face's order: captured inputs, position_ids, inputs_embeds, labels,
    output_hidden_states; GPT-2's token_type_ids; `cached` (a causal LM with a KV cache): past_key_values and
    use_cache; `keeps_logits` (its head can read the last positions only, see codegen/source.py): logits_to_keep."""
    if not is_hf(cm):
        return list(cm.input_names)
    names = set(cm.input_names) | ({"past_key_values", "use_cache"} if cached else set())
    if default_node(cm.gm, "position_ids") is not None:
        names.add("position_ids")
    if inputs_embeds_node(cm) is not None:
        names.add("inputs_embeds")
        if adds_token_types(cm):
            names.add("token_type_ids")
    if cm.hf_loss:
        names.add("labels")
    if hidden_layers(cm) is not None:
        names.add("output_hidden_states")
    if keeps_logits:
        names.add("logits_to_keep")
    return [n for n in HF_ORDER if n in names]


def signature(cm, cached: bool = False, keeps_logits: bool = False) -> str:
    """`input_ids, attention_mask=None, …` (a plain module's inputs are all required; input_ids is optional where
    inputs_embeds may stand for it)."""
    names = forward_inputs(cm, cached, keeps_logits)
    if not is_hf(cm):
        return ", ".join(names)
    first = "input_ids=None" if "inputs_embeds" in names else "input_ids"
    rest = [f"{n}=0" if n == "logits_to_keep" else f"{n}=None" for n in names[1:]]
    return ", ".join([first] + rest + ["return_dict=None"])


# ----------------------------------------------------------------------------- inputs_embeds, hidden_states


def inputs_embeds_node(cm) -> torch.fx.Node | None:
    """The value Hugging Face takes from `inputs_embeds` when it is given: the token embedding's lookup of
    input_ids, where its module only looks up (nn.Embedding; a scaled embedding multiplies inside: None)."""
    if not is_hf(cm):
        return None
    sem = cm.semantics()
    found = [n for n in cm.gm.graph.nodes if sem.role(n) == "token_embedding" and _reads_input_ids(n.args[1])]
    if len(found) != 1:
        return None
    path = module_of(found[0])[0]
    alone = all(n is found[0] or module_of(n)[0] != path for n in cm.gm.graph.nodes if n.op == "call_function")
    return found[0] if path and alone else None


def _reads_input_ids(node, hops: int = 4) -> bool:
    while isinstance(node, torch.fx.Node) and hops:
        if node.op == "placeholder":
            return node.name == "input_ids"
        op = str(node.target).split(".")
        if node.op != "call_function" or not node.args or len(op) < 2 or op[-2] not in ("view", "reshape"):
            return False
        node, hops = node.args[0], hops - 1
    return False


def adds_token_types(cm) -> bool:
    """GPT-2's convention: its forward takes token_type_ids but the model has no token-type embedding; given, they
    are looked up in the token embedding and added to the first hidden state (GPT-2, GPTBigCode, GPT-Neo, GPT-J)."""
    import transformers

    if "token_type_ids" in cm.input_names:
        return False
    cls = getattr(transformers, cm.model_class, None)
    sem = cm.semantics()
    has_types = any(sem.role(n) == "token_type_embedding" for n in cm.gm.graph.nodes)
    return cls is not None and "token_type_ids" in inspect.signature(cls.forward).parameters and not has_types


def hidden_layers(cm) -> tuple[list[str], str] | None:
    """What Hugging Face's hidden_states are made of: the layers (the indexed module around each attention, in
    order: their first input and every output) and the module that runs them (its output, after the final norm
    where there is one, replaces the last layer's); "" where the model's own last_hidden_state output is that."""
    if not is_hf(cm):
        return None
    layers, owners = [], set()
    for att in cm.semantics().attentions:
        parts = att.path.split(".")
        at = next((i for i, p in enumerate(parts) if p.isdigit()), None)
        if at is None or at < 1:
            return None
        layer = ".".join(parts[:at + 1])
        if layer not in layers:
            layers.append(layer)
        owners.add(".".join(parts[:at - 1]))
    if not layers or len(owners) != 1:
        return None
    owner = owners.pop()
    if "last_hidden_state" in cm.output_names:
        return layers, ""
    return (layers, owner) if owner else None


def lm_head_input(cm) -> torch.fx.Node | None:
    """The [batch, seq, hidden] value a causal LM's head reads (`logits_to_keep` keeps its last positions)."""
    sem = cm.semantics()
    for node in cm.gm.graph.nodes:
        if node.op == "call_function" and sem.module_role(module_of(node)[0]) == "lm_head":
            x = node.args[0] if node.args else None
            val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
            return x if isinstance(val, torch.Tensor) and val.dim() == 3 else None
    return None


def prologue(cm, cached: bool = False) -> list[str]:
    """Lines that give every captured optional input Hugging Face's default; `cached`: a KVCache per attention layer
    (KV_LAYERS) when use_cache or past_key_values, and the mask and positions of the new tokens after the cached."""
    if not is_hf(cm):
        return []
    lines = _embeds_and_states(cm)
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
    if not sources:  # HF derives them from labels only, and this forward takes none
        return [f"if {DECODER} is None:", f'    raise ValueError("{cm.model_class} needs decoder_input_ids")']
    if sources == ["labels"]:
        return lines + ["    if labels is None:",
                        f'        raise ValueError("{cm.model_class} needs decoder_input_ids or labels (Hugging Face '
                        'derives decoder_input_ids from labels only)")',
                        f"    {DECODER} = {shift.format('labels')}"]
    return lines + [f"    {DECODER} = {shift.format(sources[0])}"]


def _embeds_and_states(cm) -> list[str]:
    """inputs_embeds in place of input_ids (input_ids then only lends its shape to the code that reads sizes from
    it), GPT-2's token types added to them, and the hooks that record hidden_states when asked."""
    lines = []
    embeds = inputs_embeds_node(cm)
    if embeds is not None:
        lines += ["if (input_ids is None) == (inputs_embeds is None):",
                  '    raise ValueError("You must specify exactly one of input_ids or inputs_embeds")',
                  "if input_ids is None:  # only the shape of input_ids is read below (-1: no token is looked up)",
                  "    input_ids = torch.full(inputs_embeds.shape[:2], -1, dtype=torch.long, "
                  "device=inputs_embeds.device)"]
        if adds_token_types(cm):
            table = "self." + module_of(embeds)[0]
            lines += ["if token_type_ids is not None:  # Hugging Face looks token types up in the token embedding",
                      "    if inputs_embeds is None:",
                      f"        inputs_embeds = {table}(input_ids)",
                      f"    inputs_embeds = inputs_embeds + {table}(token_type_ids.view(input_ids.shape))"]
    if hidden_layers(cm) is not None:
        final = hidden_layers(cm)[1]
        lines += [f"recorded = HiddenStates(self, HIDDEN_LAYERS, {final!r}) if output_hidden_states else None"]
    return lines


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
    if hidden_layers(cm) is not None:
        final = "" if hidden_layers(cm)[1] else 'outputs["last_hidden_state"]'
        lines += ["if recorded is not None:  # the first layer's input, every layer's output, the final hidden state",
                  f'    outputs["hidden_states"] = recorded.result({final})']
    return lines + ["return outputs.to_tuple() if return_dict is False else outputs  # Hugging Face's return_dict"]


def constants(cm) -> dict:
    """Module-level constants model.py's functions read (LOSS for hf_loss; HIDDEN_LAYERS for hidden_states)."""
    found = hidden_layers(cm)
    return {"LOSS": cm.hf_loss, **({"HIDDEN_LAYERS": found[0]} if found else {})}
