"""Surgery: find LoRA targets by dataflow, insert/remove "Add LoRA Layer" blocks, undo/redo, recipes, budget.

Block paths: an Add LoRA Layer on role R consumed by the attention module at path P lives at ``P.lora_R``
(``transformer.h.0.attn.lora_q``, ``encoder.layer.0.attention.self.lora_v``); its weights are the gm
submodules ``P.lora_R.lora.lora_A`` / ``.lora_B``. A bare "LoRA Layer" (the branch alone, wired by the user
with `connect_lora`) lives at the same path with its weights at ``P.lora_R.lora_A`` / ``.lora_B``. A projection chosen explicitly (no attention op
behind it) gets ``<projection's parent>.lora_<attribute name>`` (``transformer.h.0.mlp.lora_c_fc``).
"""

import importlib

# name -> the submodule defining it: imported on first use (PEP 562), so that `surgery.spec` (LoRAConfig's checks)
# loads without torch — the editor validates a drop made on a preview while the worker is still importing torch
_WHERE = {
    "commands": ("ChangeLoRA", "Compound", "ConnectLoRA", "InsertLoRA", "Record", "RemoveLoRA"),
    "history": ("History", "add_lora", "lora_command"),
    "lora": ("block_path", "connect_lora", "disconnect_lora", "insert_lora", "lora_weights", "remove_lora"),
    "spec": ("LoRABlock", "LoRAConfig", "Target"),
    "targets": ("find_targets", "projection_targets", "resolve_targets"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    try:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule, as attribute access found it before
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
