"""model.py (written by export/codegen) and the tensors model.safetensors holds."""

from __future__ import annotations

from pathlib import Path

import torch

from graphsurgeon.export.codegen.scopes import export_path, inline_constant

TEMPLATES = Path(__file__).parent / "templates"


def export_tensors(cm) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """(tensors by exported name, tied name -> source name, buffer names). LoRA weights get export names."""
    gm = cm.gm
    blocks = list(cm.loras.values())
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[int, str] = {}
    get_attrs = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    read = set(get_attrs)  # a buffer the graph never reads (Llama's original_inv_freq) is neither written nor built
    named_buffers = [(n, b) for n, b in gm.named_buffers(remove_duplicate=False) if n in read]
    buffers = {n for n, _ in named_buffers}
    items = list(gm.named_parameters(remove_duplicate=False)) + named_buffers
    names = {n for n, _ in items}
    for target in get_attrs:  # constants the graph reads that are neither parameters nor buffers
        if target not in names:
            owner_path, _, leaf = target.rpartition(".")
            value = getattr(gm.get_submodule(owner_path) if owner_path else gm, leaf)
            if isinstance(value, torch.Tensor) and not inline_constant(value):  # a small one is written in model.py
                items.append((target, value))
                buffers.add(target)
    for name, t in items:
        name = export_path(blocks, name)
        key = id(t)
        if key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().contiguous()
    return tensors, tied, sorted(b for b in buffers if b in tensors)


def saved_tensors(cm) -> dict[str, torch.Tensor]:
    """What model.safetensors holds: the exported tensors but the buffers model.py computes from its config."""
    from graphsurgeon.export.codegen import generate

    computed = generate(cm).model.recipes.computed
    return {k: v for k, v in export_tensors(cm)[0].items() if k not in computed}


def generation_text(cm) -> str:
    """How model.py generates, for the export's README ("" when it does not: not a causal LM with HF's inputs)."""
    from graphsurgeon.export.codegen import generate

    model = generate(cm).model
    if not model.generates:
        return ""
    why = f"with one, {cm.kv_cache_off}" if cm.kv_cache_off else "this model's attention is not SDPA's"
    how = ("with a KV cache per attention layer" if model.kv_paths else f"without a KV cache ({why}): each new token "
           "reads the whole sequence again, the same tokens, slower on long outputs")
    return ("`m.generate(input_ids, attention_mask=None, max_new_tokens=20, do_sample=False, temperature=1.0, "
            "top_k=None, top_p=None, eos_token_id=None)` writes Hugging Face's greedy tokens (or samples after its "
            "temperature, top-k and top-p), a batch padded on the left included, stopping at this folder's eos "
            f"token; {how}.")


def model_source(cm) -> str:
    """The full text of model.py."""
    from graphsurgeon.export.codegen import model_source as source

    return source(cm)
