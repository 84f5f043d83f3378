"""Write model.py (from the head/tail templates and the generated forward) and collect its tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from graphsurgeon.export import hf_forward
from graphsurgeon.export.codegen import forward_body, lora_export_name

TEMPLATES = Path(__file__).parent / "templates"


def export_tensors(cm) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """(tensors by exported name, tied name -> source name, buffer names). LoRA weights get export names."""
    gm = cm.gm
    lora_mods = {b.module_path: lora_export_name(b) for b in cm.loras.values()}
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[int, str] = {}
    buffers = {n for n, _ in gm.named_buffers(remove_duplicate=False)}
    items = list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    get_attrs = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    names = {n for n, _ in items}
    for target in get_attrs:  # constants the graph reads that are neither parameters nor buffers
        if target not in names:
            owner_path, _, leaf = target.rpartition(".")
            value = getattr(gm.get_submodule(owner_path) if owner_path else gm, leaf)
            if isinstance(value, torch.Tensor):
                items.append((target, value))
                buffers.add(target)
    for name, t in items:
        for mod, out in lora_mods.items():
            if name.startswith(mod + "."):
                name = out + name[len(mod):]
                break
        key = id(t)
        if key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().contiguous()
    return tensors, tied, sorted(b for b in buffers if b in tensors)


def _is_causal(cm) -> bool:
    return cm.model_class.endswith(("LMHeadModel", "ForCausalLM")) or "logits" in cm.output_names and bool(
        cm.config and cm.config.get("is_decoder", False))


def model_source(cm) -> str:
    """The full text of model.py."""
    lines, outputs, lists, layer_src, layer_class = forward_body(cm)
    tensors, tied, buffers = export_tensors(cm)
    loras = {lora_export_name(b): dict(in_features=b.target.in_features, out_features=b.target.out_features,
                                       r=b.config.r, scaling=float(b.config.scaling), dropout=float(b.config.dropout))
             for b in cm.loras.values()}
    expected = {name: list(t.shape) for name, t in tensors.items()}
    head = (TEMPLATES / "model_head.py").read_text().format(
        title=f"{cm.model_class} exported by graphsurgeon ({len(cm.loras)} LoRA layers).",
        model_class=cm.model_class, example_call="{" + ", ".join(f"{n!r}: ..." for n in cm.input_names) + "}",
        first_output=cm.output_names[0], inputs=list(cm.input_names), outputs=list(cm.output_names),
        lists=sorted(lists), buffers=buffers, tied=tied, loras=loras, causal=_is_causal(cm),
        mlm=cm.model_class.endswith("ForMaskedLM"), layers=layer_class, expected=expected,
        loss=hf_forward.constants(cm)["LOSS"])
    outs = dict(zip(cm.output_names, outputs))
    body = [f"    def forward(self, {hf_forward.signature(cm)}) -> dict:",
            '        """Inputs by keyword (None: Hugging Face\'s default); returns {'
            + ", ".join(repr(o) for o in (["loss"] if "labels" in hf_forward.forward_inputs(cm) else []) + cm.output_names)
            + '}."""']
    body += ["        " + ln for ln in hf_forward.prologue(cm) + lines + hf_forward.epilogue(cm, outs)]
    tail = (TEMPLATES / "hf_functions.py").read_text() + "\n\n" + (TEMPLATES / "model_tail.py").read_text()
    layers = (layer_src + "\n\n\n") if layer_src else ""
    return head.replace("class Model(nn.Module):", layers + "class Model(nn.Module):") + "\n".join(body) + "\n" + tail
