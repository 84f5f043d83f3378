"""LoRA column maths (torch only): the PEFT adapter of a set of LoRA blocks, and folding them into weights.

Written by graphsurgeon into every export folder next to train.py; graphsurgeon's own exporter
imports the same file, so the editor, the adapter files and `train.py --merge` share one definition.

A LoRA block adapts `columns` of a projection's output (None: all of them, in order): row i of its
B (shape [len(columns), r]) belongs to output column columns[i]. Its update of the weight is

    Linear weight [out, in]:  W[columns, :] += B @ A * scaling
    Conv1D weight [in, out]:  W[:, columns] += (B @ A * scaling).T
    kernel-1 Conv1d weight [out, in, 1]:  W[columns, :, 0] += B @ A * scaling

PEFT adapts a whole module with one scaling, so several blocks on one module (GPT-2's q and v slices
of c_attn, GPT-NeoX's interleaved q and v heads of query_key_value) become one exactly equivalent
adapter of rank Σ r_i: A stacked, B zero except each block's rows scattered over its columns.
"""

from __future__ import annotations

import torch


def scatter_rows(b: torch.Tensor, columns, out_features: int) -> torch.Tensor:
    """B [len(columns), r] placed on the rows `columns` of a zero [out_features, r] (None: B itself)."""
    if columns is None:
        return b
    full = torch.zeros(out_features, b.shape[1], dtype=b.dtype)
    full[torch.as_tensor(list(columns), dtype=torch.long)] = b
    return full


def peft_tensors(blocks: list[dict], out_features: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(lora_A [Σr, in], lora_B [out, Σr], scaling) of one PEFT adapter equal to every block on one module.

    blocks: dicts with "A" [r, in], "B" [w, r], "columns" (list or None) and "scaling". PEFT's scaling
    is the first block's; the others' are folded into their B.
    """
    scaling = float(blocks[0]["scaling"])
    a_parts, b_parts = [], []
    for block in blocks:
        a, b = block["A"].detach().cpu(), block["B"].detach().cpu()
        a_parts.append(a)
        b_parts.append(scatter_rows(b * (float(block["scaling"]) / scaling), block["columns"], out_features))
    return torch.cat(a_parts, 0).contiguous(), torch.cat(b_parts, 1).contiguous(), scaling


def peft_layout(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A and B in the shapes PEFT's layer for `weight` holds: a kernel-1 Conv1d's LoRA is two kernel-1 convs
    ([r, in, 1], [out, r, 1]); a Linear's or Conv1D's are matrices as they are."""
    if weight.dim() == 3:
        return a[..., None], b[..., None]
    return a, b


def delta(block: dict) -> torch.Tensor:
    """The block's weight update on its own rows: B @ A * scaling, [len(columns), in]; refuses inf/nan."""
    update = (block["B"].detach().cpu().float() @ block["A"].detach().cpu().float()) * float(block["scaling"])
    if not torch.isfinite(update).all():
        raise ValueError("the LoRA update has non-finite values")
    return update


def fold(weight: torch.Tensor, block: dict, fan_in_fan_out: bool) -> torch.Tensor:
    """`weight` with the block's update added on its columns (a new tensor; Conv1D weights are [in, out])."""
    update = delta(block).to(weight.dtype)
    merged = weight.detach().clone()
    rows = slice(None) if block["columns"] is None else torch.as_tensor(list(block["columns"]), dtype=torch.long)
    if fan_in_fan_out:
        merged[:, rows] += update.T
    else:  # a kernel-1 Conv1d's weight is [out, in, 1]
        merged[rows] += update.view(merged[rows].shape)
    return merged


# PEFT's task types by the loss Hugging Face computes (model.py's LOSS["loss_type"]; None: no head -> hidden states)
TASK_TYPES = {
    "ForCausalLM": "CAUSAL_LM",
    "ForSequenceClassification": "SEQ_CLS",
    "ForTokenClassification": "TOKEN_CLS",
    "ForQuestionAnswering": "QUESTION_ANS",
    "ForConditionalGeneration": "SEQ_2_SEQ_LM",
    None: "FEATURE_EXTRACTION",
}


def task_type(loss_type: str | None) -> str | None:
    """PEFT's task_type for a model whose labels give Hugging Face's `loss_type` (ForSequenceClassification ->
    SEQ_CLS, no head -> FEATURE_EXTRACTION); None where PEFT has none (masked LM): PeftModel.from_pretrained loads it."""
    return TASK_TYPES.get(loss_type)


def trained_heads(model: torch.nn.Module, loss_type: str | None) -> list[str]:
    """The heads train.py trains beside the LoRA (PEFT's modules_to_save): a classifier's children outside the
    backbone (the child with the most parameters) that hold parameters (`classifier`, `score`)."""
    if loss_type not in ("ForSequenceClassification", "ForTokenClassification"):
        return []
    children = [(n, sum(p.numel() for p in c.parameters())) for n, c in model.named_children()]
    backbone = max(children, key=lambda c: c[1])[0] if children else None
    return [n for n, size in children if n != backbone and size]


def peft_config(
    modules: dict[str, tuple[int, float]],
    dropout: float,
    fan_in_fan_out: bool,
    base_model: str | None,
    *,
    task: str | None = None,
    modules_to_save: list[str] | None = None,
    revision: str | None = None,
    peft_version: str | None = None,
) -> dict:
    """adapter_config.json for `modules` = {module path: (rank, scaling)} (PEFT: scaling = alpha / r)."""
    ranks = {m: r for m, (r, _) in modules.items()}
    alphas = {m: s * r for m, (r, s) in modules.items()}
    config = {
        "peft_type": "LORA",
        "task_type": task,
        "base_model_name_or_path": base_model,
        "revision": revision,
        "r": next(iter(ranks.values()), 8),
        "lora_alpha": next(iter(alphas.values()), 8),
        "lora_dropout": dropout,
        "bias": "none",
        "use_rslora": False,
        "fan_in_fan_out": fan_in_fan_out,
        "target_modules": sorted(modules),
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "init_lora_weights": True,
        "modules_to_save": modules_to_save or None,
        "inference_mode": True,
    }
    if peft_version:
        config["peft_version"] = peft_version
    return config
