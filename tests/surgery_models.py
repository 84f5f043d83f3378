"""Tiny Hugging Face models for the surgery tests, built from configs (no downloads), captured once each."""

from __future__ import annotations

import functools

import torch
import transformers as tf

from graphsurgeon.capture import capture
from graphsurgeon.surgery import lora_weights
from shared_captures import copy_of

SMALL = dict(vocab_size=101, max_position_embeddings=64)


CONFIGS = {  # arch -> (class prefix, config class, tiny config, class of the suite's model)
    "bert": ("Bert", tf.BertConfig, dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                         intermediate_size=128, **SMALL), "BertModel"),
    "roberta": ("Roberta", tf.RobertaConfig, dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                  intermediate_size=128, pad_token_id=1, vocab_size=101,
                                                  max_position_embeddings=70), "RobertaModel"),
    "distilbert": ("DistilBert", tf.DistilBertConfig, dict(n_layers=2, dim=64, n_heads=4, hidden_dim=128, **SMALL),
                   "DistilBertModel"),
    "gpt2": ("GPT2", tf.GPT2Config, dict(n_layer=2, n_embd=64, n_head=4, vocab_size=101, n_positions=64),
             "GPT2LMHeadModel"),
    "bigcode": ("GPTBigCode", tf.GPTBigCodeConfig, dict(n_layer=2, n_embd=64, n_head=16, multi_query=True,
                                                        vocab_size=101, n_positions=64), "GPTBigCodeForCausalLM"),
    "opt": ("OPT", tf.OPTConfig, dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, ffn_dim=128,
                                      word_embed_proj_dim=64, **SMALL), "OPTForCausalLM"),
    "llama": ("Llama", tf.LlamaConfig, dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=128, **SMALL), "LlamaForCausalLM"),
}


def build(arch: str, head: str | None = None, **overrides) -> torch.nn.Module:
    """A tiny model of `arch` with seeded random weights, in eval mode.

    head: None for the suite's class (the base model for encoders, the causal LM for decoders), or a Hugging Face
    task suffix ("ForMaskedLM", "ForSequenceClassification", …); overrides change the tiny config.
    """
    prefix, config_cls, config, default = CONFIGS[arch]
    torch.manual_seed(0)
    cls = getattr(tf, default if head is None else prefix + head)
    return cls(config_cls(**{**config, **overrides})).eval()


ARCHS = ["bert", "roberta", "distilbert", "gpt2", "bigcode", "opt", "llama"]


def fresh(arch: str):
    """A capture of the tiny `arch` model, safe to edit: a copy of one capture per session (shared_captures)."""
    return copy_of(("surgery_models", arch), lambda: capture(build(arch)))


@functools.lru_cache(maxsize=None)
def shared(arch: str):
    """One capture per arch per session, read-only."""
    return fresh(arch)


def first_output(cm) -> torch.Tensor:
    out = cm.run(**cm.example_inputs)
    return next(iter(out.values()))


def randomize(cm, seed: int = 1) -> None:
    """Non-zero A and B in every block (B=0 would hide any wiring mistake)."""
    gen = torch.Generator().manual_seed(seed)
    for path in cm.loras:
        a, b = lora_weights(cm, path)
        with torch.no_grad():
            a.weight.copy_(torch.randn(a.weight.shape, generator=gen) * 0.2)
            b.weight.copy_(torch.randn(b.weight.shape, generator=gen) * 0.2)


def delta_w_oracle(arch: str, cm) -> torch.Tensor:
    """The unmodified model whose projection weights got ΔW·scaling added on the adapted columns."""
    model = with_delta(build(arch), cm)
    with torch.no_grad():
        return model(**cm.example_inputs)[0]


def with_delta(model: torch.nn.Module, cm) -> torch.nn.Module:
    """`model` with every LoRA block of `cm` folded into its projection weight by hand: ΔW = B·A·scaling on the
    rows (Linear [out, in]) or columns (Conv1D [in, out]) the target names, in the target's order."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for path, block in cm.loras.items():
            a, b = lora_weights(cm, path)
            delta = (b.weight @ a.weight) * block.config.scaling  # [out, in]
            t = block.target
            cols = list(t.columns) if t.columns is not None else list(range(t.out_features))
            w = params[f"{t.module}.weight"]
            if t.kind == "conv1d":
                w[:, cols] += delta.T  # Conv1D weight is [in, out]: columns
            else:
                w[cols, :] += delta  # Linear weight is [out, in]: rows
    return model
