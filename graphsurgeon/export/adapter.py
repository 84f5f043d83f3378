"""The PEFT adapter files: one LoRA per module; Q/V slices of a fused projection become one exact rank-(r_q+r_v) adapter."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from graphsurgeon.errors import GraphsurgeonError


def adapter_tensors(cm) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors under PEFT keys, adapter_config dict). Per-block scalings are folded into B when they differ."""
    by_module: dict[str, list] = {}
    for block in cm.loras.values():
        if block.mergeable:  # a bare LoRA Layer wired elsewhere is no ΔW of a weight: PEFT cannot hold it
            by_module.setdefault(block.target.module, []).append(block)
    tensors: dict[str, torch.Tensor] = {}
    rank_pattern, alpha_pattern, kinds, dropouts = {}, {}, set(), set()
    for module, blocks in by_module.items():
        t0 = blocks[0].target
        kinds.add(t0.kind)
        dropouts.add(float(blocks[0].config.dropout))
        sub = cm.gm.get_submodule(module)
        w = sub.weight
        out_full = w.shape[1] if t0.kind == "conv1d" else w.shape[0]
        a_parts, rank = [], sum(b.config.r for b in blocks)
        scaling = blocks[0].config.scaling  # PEFT's single scaling for the module; the others fold into B
        b_full = torch.zeros(out_full, rank, dtype=w.dtype)
        col = 0
        for b in blocks:
            mod = cm.gm.get_submodule(b.module_path)
            a, bw = mod.lora_A.weight.detach().cpu(), mod.lora_B.weight.detach().cpu()
            a_parts.append(a)
            start, stop = b.target.columns or (0, out_full)
            b_full[start:stop, col:col + b.config.r] = bw * (b.config.scaling / scaling)
            col += b.config.r
        key = f"base_model.model.{module}"
        tensors[f"{key}.lora_A.weight"] = torch.cat(a_parts, 0).contiguous()
        tensors[f"{key}.lora_B.weight"] = b_full.contiguous()
        rank_pattern[module] = rank
        alpha_pattern[module] = scaling * rank  # PEFT: scaling = alpha / r
    if len(kinds) > 1:
        raise GraphsurgeonError("the PEFT adapter cannot mix Conv1D and Linear targets; export them separately.")
    if len(dropouts) > 1:
        raise GraphsurgeonError("LoRA blocks have different dropouts, which one PEFT adapter cannot hold; use one dropout.")
    config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": cm.source_name,
        "r": next(iter(rank_pattern.values()), 8), "lora_alpha": next(iter(alpha_pattern.values()), 8),
        "lora_dropout": next(iter(dropouts), 0.0), "bias": "none", "use_rslora": False,
        "fan_in_fan_out": kinds == {"conv1d"},
        "target_modules": sorted(by_module), "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern, "init_lora_weights": True, "modules_to_save": None, "inference_mode": True,
    }
    return tensors, config


def adapter_notes(cm) -> list[str]:
    """One sentence per block the PEFT adapter (and merging) cannot express."""
    return [f"{b.path} is a bare LoRA Layer added onto {b.onto}, not onto its projection's output "
            f"{b.target.target_node}: it is in model.py and model.safetensors but not in the PEFT adapter, "
            "and the LoRA cannot be merged into a weight." for b in cm.loras.values() if not b.mergeable]


def write_adapter(cm, folder: Path) -> None:
    """adapter_model.safetensors + adapter_config.json for every block PEFT can hold (none: no files)."""
    if not any(b.mergeable for b in cm.loras.values()):
        return
    tensors, config = adapter_tensors(cm)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
