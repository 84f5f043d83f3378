"""Capture: a model source → torch.export → CapturedModel (the fx graph with shapes and module paths).

Importing this package does not import torch or transformers (the editor paints its window first); `build_model`
and `capture` import them when called.
"""

from __future__ import annotations

from graphsurgeon.capture.presets import DEFAULT_PRESET, preset_names
from graphsurgeon.capture.sources import ModelRecipe, resolve

__all__ = ["DEFAULT_PRESET", "ModelRecipe", "build_model", "capture", "capture_module", "preset_names",
           "refuses_sdpa", "resolve"]


def build_model(source: str, *, meta: bool = False, eager_attention: bool = False,
                allow_missing_weights: bool = False, allow_nonfinite: bool = False):
    """The Hugging Face model of a preset / folder / cached hub id, instantiated (meta=True: on the meta device,
    no weight memory) — its module hierarchy is known before torch.export runs; `capture(..., model=)` reuses it.

    When transformers refuses SDPA attention for the model (BLOOM, DeBERTa-v2, GPT-Neo), it is built with its eager
    attention instead; `model._graphsurgeon_attn` and `model._graphsurgeon_notes` say so.
    """
    return _build(resolve(str(source)), meta, "eager" if eager_attention else "sdpa", allow_missing_weights,
                  allow_nonfinite)


def _build(recipe: ModelRecipe, meta: bool, attn: str, allow_missing: bool, allow_nonfinite: bool = False):
    from graphsurgeon.errors import GraphsurgeonError

    device = "meta" if meta else "cpu"
    notes = []
    try:
        model = recipe.build(device, attn_implementation=attn, allow_missing=allow_missing,
                             allow_nonfinite=allow_nonfinite)
    except (ValueError, GraphsurgeonError) as err:
        if attn != "sdpa" or not refuses_sdpa(err):
            raise
        attn = "eager"  # transformers has no SDPA path for this model: its eager attention is the graph
        model = recipe.build(device, attn_implementation=attn, allow_missing=allow_missing,
                             allow_nonfinite=allow_nonfinite)
        notes.append(f"eager attention: transformers does not support SDPA for {type(model).__name__}")
    model._graphsurgeon_attn, model._graphsurgeon_notes = attn, notes
    return model


def capture(source, *, meta: bool = False, eager_attention: bool = False,
            example_inputs: dict | None = None, dynamic: dict | None = None,
            allow_missing_weights: bool = False, allow_nonfinite: bool = False, model=None, replicate: bool = True,
            progress=None):
    """Capture a preset name, a local Hugging Face folder, a cached hub id, or an nn.Module into a CapturedModel.

    meta=True builds the model on the meta device: the architecture only, no weight memory;
    `CapturedModel.materialize()` gives it weights later. The weight file is checked against the config
    either way; allow_missing_weights lets tensors missing from it start random, allow_nonfinite keeps weights holding
    NaN / inf (the weights note says so).
    `model`: the same source already built by `build_model` with the same meta / eager_attention (not built again).
    replicate: capture two layers of each layer kind and replicate the rest (False: trace every layer).
    progress: called with a line of text on what runs (the CLI prints it on stderr).
    """
    from graphsurgeon.graph.gc_pause import paused_gc

    with paused_gc():  # millions of long-lived objects at 5,000 layers: see graph/gc_pause.py
        return _capture(source, meta, eager_attention, example_inputs, dynamic, allow_missing_weights,
                        allow_nonfinite, model, replicate, progress)


def _capture(source, meta, eager_attention, example_inputs, dynamic, allow_missing_weights, allow_nonfinite, model,
             replicate, progress):
    import torch

    from graphsurgeon.capture.exporter import capture_hf_model

    if isinstance(source, torch.nn.Module):
        return capture_module(source, example_inputs, dynamic=dynamic, replicate=replicate, progress=progress)
    recipe = resolve(str(source))
    if model is None:
        if progress is not None:
            progress(f"building {recipe.name}")
        model = _build(recipe, meta, "eager" if eager_attention else "sdpa", allow_missing_weights, allow_nonfinite)
    attn = model._graphsurgeon_attn
    cm = capture_hf_model(model, name=recipe.name, weights=model._graphsurgeon_weights, config=dict(recipe.config),
                          attn=attn, materializer=lambda: recipe.build("cpu", attn_implementation=attn,
                                                                       allow_missing=allow_missing_weights,
                                                                       allow_nonfinite=allow_nonfinite),
                          replicate=replicate, progress=progress)
    cm.notes[:0] = model._graphsurgeon_notes
    cm.weights_note = model._graphsurgeon_note
    if meta:  # what materialize() will give it: said before an export loads or writes anything
        cm.materializes_to, cm.materialize_note = model._graphsurgeon_later
    return cm


def refuses_sdpa(err: BaseException) -> bool:
    """True when transformers refused to build the model with SDPA attention (BLOOM, DeBERTa-v2, GPT-Neo)."""
    text = str(err)
    return "scaled_dot_product_attention" in text or "does not support an attention implementation" in text


def capture_module(module, example_inputs: dict | None, *, dynamic: dict | None = None, replicate: bool = True,
                   progress=None):
    """Capture any nn.Module called as module(**example_inputs)."""
    from graphsurgeon.capture.exporter import capture_hf_model, export_module, seq_bound_note
    from graphsurgeon.errors import CaptureError
    from graphsurgeon.graph.captured import CapturedModel
    from graphsurgeon.graph.peft_classes import not_for_peft

    if not example_inputs:
        if hasattr(module, "config"):
            return capture_hf_model(module, name=type(module).__name__, weights="real", config=module.config.to_dict(),
                                    attn=getattr(module.config, "_attn_implementation", None), replicate=replicate,
                                    progress=progress)
        raise CaptureError(f"capturing a plain {type(module).__name__} needs example_inputs={{name: tensor}}.")
    example_inputs = dict(example_inputs)  # the caller's dict stays as given (capture may round a dim up to a multiple)
    gm, dims, outputs = export_module(module, example_inputs, dynamic=dynamic, name=type(module).__name__)
    meta_dev = any(p.is_meta for p in module.parameters())
    # a range torch.export refused and the one used; a dim fixed by the code only where the caller named it dynamic
    # (the guessed dims of a plain module's inputs, such as the features of a [batch, 4] input, are not news)
    note = seq_bound_note(dims, fixed=dynamic is not None)
    return CapturedModel(
        gm=gm, dims=dims, model_class=type(module).__name__, source_name="<module>",
        weights="meta" if meta_dev else "real", input_names=list(example_inputs), output_names=outputs,
        example_inputs=dict(example_inputs), module_classes={p: type(m).__name__ for p, m in module.named_modules()},
        not_for_peft=not_for_peft(module),
        notes=[note] if note else [],
    )
