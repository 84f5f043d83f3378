"""Which modules PEFT cannot adapt: LoRA on them would be exact in the graph and model.py, but the exported adapter
could never be loaded with PEFT (`get_peft_model` raises "Target module … is not supported")."""

from __future__ import annotations

import torch

# the layer classes PEFT's LoRA adapts (by isinstance, so their subclasses too)
PEFT_LAYERS = {("torch.nn.modules.linear", "Linear"), ("torch.nn.modules.sparse", "Embedding"),
               ("torch.nn.modules.conv", "Conv1d"), ("torch.nn.modules.conv", "Conv2d"),
               ("torch.nn.modules.conv", "Conv3d"), ("transformers.pytorch_utils", "Conv1D"),
               ("torch.nn.modules.activation", "MultiheadAttention")}
PEFT_NAMES = "torch.nn.Linear, Conv1d/2d/3d, Embedding and transformers' Conv1D"
# the projections a LoRA block adapts (their output is a whole Linear/Conv1D product), told by class before a capture
PROJECTION_LAYERS = {("torch.nn.modules.linear", "Linear"), ("transformers.pytorch_utils", "Conv1D")}


def is_projection_layer(module: torch.nn.Module) -> bool:
    """True for an nn.Linear or transformers' Conv1D (or a subclass): what the editor offers for a drop while only
    the module tree is known; the capture's dataflow (graph.semantics.dataflow.projection) decides in the end."""
    return any((c.__module__, c.__name__) in PROJECTION_LAYERS for c in type(module).__mro__)


def not_for_peft(model: torch.nn.Module) -> dict[str, str]:
    """Module path -> class name of each module holding its own weight whose class PEFT cannot adapt (I-BERT's
    QuantLinear)."""
    out = {}
    for path, module in model.named_modules():
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        if not any((c.__module__, c.__name__) in PEFT_LAYERS for c in type(module).__mro__):
            out[path] = type(module).__name__
    return out
