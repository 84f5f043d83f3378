"""The PEFT adapter files: one LoRA per module; column sets of a fused projection become one exact rank-Σr adapter.

The maths lives in `templates/lora_math.py`, the file the export folder's train.py uses too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.export.templates import lora_math


def lora_blocks(cm, blocks) -> list[dict]:
    """The blocks as lora_math reads them: A, B, columns, scaling."""
    out = []
    for b in blocks:
        mod = cm.gm.get_submodule(b.module_path)
        out.append({"A": mod.lora_A.weight, "B": mod.lora_B.weight, "scaling": b.config.scaling,
                    "columns": list(b.target.columns) if b.target.columns is not None else None})
    return out


def adapter_tensors(cm, export_dir: Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors under PEFT keys, adapter_config dict). Per-block scalings are folded into B when they differ.
    `export_dir`: the export's final folder, named as the base model when the source cannot give its weights."""
    by_module: dict[str, list] = {}
    for block in cm.loras.values():
        if block.mergeable:  # a bare LoRA Layer wired elsewhere is no ΔW of a weight: PEFT cannot hold it
            by_module.setdefault(block.target.module, []).append(block)
    tensors: dict[str, torch.Tensor] = {}
    modules, kinds, dropouts = {}, set(), set()
    for module, blocks in by_module.items():
        kinds.add(blocks[0].target.kind)
        dropouts.update(float(b.config.dropout) for b in blocks)
        w = cm.gm.get_submodule(module).weight
        out_full = w.shape[1] if blocks[0].target.kind == "conv1d" else w.shape[0]
        a, b, scaling = lora_math.peft_tensors(lora_blocks(cm, blocks), out_full)
        a, b = lora_math.peft_layout(a, b, w)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(w.dtype)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(w.dtype)
        modules[module] = (a.shape[0], scaling)
    if "conv1d" in kinds and len(kinds) > 1:  # fan_in_fan_out is one flag for the whole adapter
        raise GraphsurgeonError("the PEFT adapter cannot mix Conv1D and Linear targets; export them separately.")
    if len(dropouts) > 1:
        raise GraphsurgeonError("LoRA blocks have different dropouts, which one PEFT adapter cannot hold; use one dropout.")
    loss = (cm.hf_loss or {}).get("loss_type")
    heads = lora_math.trained_heads(cm.gm, loss)
    for head in heads:  # PEFT's modules_to_save: the head's weights under base_model.model.<head>.<name>
        for name, t in cm.gm.get_submodule(head).state_dict().items():
            tensors[f"base_model.model.{head}.{name}"] = t.detach().cpu().contiguous()
    base, revision = base_model(cm.source_name, cm.weights, export_dir)
    config = lora_math.peft_config(modules, next(iter(dropouts), 0.0), kinds == {"conv1d"}, base,
                                   task=lora_math.task_type(loss), modules_to_save=heads, revision=revision,
                                   peft_version=_peft_version())
    return tensors, config


def base_model(source: str, weights: str = "real", export_dir: Path | None = None) -> tuple[str | None, str | None]:
    """(base_model_name_or_path, revision) PEFT loads the base model from: a folder as its absolute path (a Hugging
    Face cache snapshot as its hub id and commit), a hub id as it is, a preset as its hub id; None for an nn.Module.

    When the exported weights are not the source's (`weights` "random" or "partial") or a preset has no hub id, the
    source cannot give the base model: the export folder itself can (config.json + model.safetensors, which
    transformers loads, model.py's LoRA keys aside), named by its absolute path because PEFT resolves a relative one
    from the working directory; a moved export then needs its new path (`AutoModelFor….from_pretrained(folder)` and
    `PeftModel.from_pretrained(base, folder)`)."""
    if not source or source.startswith("<"):
        return None, None
    from graphsurgeon.capture.presets import is_preset, load_preset

    preset = is_preset(source) and load_preset(source)
    if export_dir is not None and (weights in ("random", "partial") or (preset and not preset.hub_id)):
        return str(Path(export_dir).expanduser().resolve()), None
    if preset and preset.hub_id:
        return preset.hub_id, _cached_revision(preset.hub_id)
    path = Path(source).expanduser()
    if path.is_dir():
        path = path.resolve()
        snapshot = re.search(r"models--([^/]+?)--([^/]+)/snapshots/([0-9a-f]{40})$", path.as_posix())
        if snapshot:
            return f"{snapshot.group(1)}/{snapshot.group(2)}", snapshot.group(3)
        return str(path), None
    return source, _cached_revision(source)


def _cached_revision(hub_id: str) -> str | None:
    """The commit of a hub id's snapshot in the local cache (looked up offline), or None."""
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(hub_id, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not cached, not a hub id: no revision to record
        return None
    return found if re.fullmatch(r"[0-9a-f]{40}", found) else None


def _peft_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("peft")
    except Exception:  # noqa: BLE001 - PEFT not installed: the adapter still loads with any PEFT
        return None


def adapter_notes(cm) -> list[str]:
    """One sentence per block the PEFT adapter (and merging) cannot express."""
    return [f"{b.path} is a bare LoRA Layer added onto {b.onto}, not onto its projection's output "
            f"{b.target.target_node}: it is in model.py and model.safetensors but not in the PEFT adapter, "
            "and the LoRA cannot be merged into a weight." for b in cm.loras.values() if not b.mergeable]


def write_adapter(cm, folder: Path, final: Path | None = None) -> None:
    """adapter_model.safetensors + adapter_config.json for every block PEFT can hold (none: no files); `final`: where
    `folder` will be moved (the base model when the source cannot give it; default `folder`)."""
    if not any(b.mergeable for b in cm.loras.values()):
        return
    tensors, config = adapter_tensors(cm, final or folder)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
