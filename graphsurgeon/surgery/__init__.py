"""Surgery: find LoRA targets by dataflow, insert/remove "Add LoRA Layer" blocks, undo/redo, recipes, budget.

Block paths: an Add LoRA Layer on role R consumed by the attention module at path P lives at ``P.lora_R``
(``transformer.h.0.attn.lora_q``, ``encoder.layer.0.attention.self.lora_v``); its weights are the gm
submodules ``P.lora_R.lora.lora_A`` / ``.lora_B``. A bare "LoRA Layer" (the branch alone, wired by the user
with `connect_lora`) lives at the same path with its weights at ``P.lora_R.lora_A`` / ``.lora_B``. A projection chosen explicitly (no attention op
behind it) gets ``<projection's parent>.lora_<attribute name>`` (``transformer.h.0.mlp.lora_c_fc``).
"""

from graphsurgeon.surgery.commands import ChangeLoRA, Compound, ConnectLoRA, InsertLoRA, Record, RemoveLoRA
from graphsurgeon.surgery.history import History, add_lora, lora_command
from graphsurgeon.surgery.lora import block_path, connect_lora, disconnect_lora, insert_lora, lora_weights, remove_lora
from graphsurgeon.surgery.spec import LoRABlock, LoRAConfig, Target
from graphsurgeon.surgery.targets import find_targets, projection_targets, resolve_targets

__all__ = ["ChangeLoRA", "Compound", "ConnectLoRA", "History", "InsertLoRA", "LoRABlock", "LoRAConfig", "Record", "RemoveLoRA",
           "Target", "add_lora", "block_path", "connect_lora", "disconnect_lora", "find_targets", "insert_lora", "lora_command", "lora_weights",
           "projection_targets", "remove_lora", "resolve_targets"]
