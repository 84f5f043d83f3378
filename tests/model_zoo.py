"""Tiny random models of every model type in PEFT's default LoRA target table that transformers ships.

Used by benchmarks/coverage.py (the whole table) and tests/test_layouts.py (a subset). Nothing is
downloaded: each model is built from its config class with hidden 64, 2 layers, 4 heads where the
config allows, seeded weights, eval mode.
"""

from __future__ import annotations

import torch
import transformers as tf

HIDDEN, LAYERS, HEADS, VOCAB, POSITIONS = 64, 2, 4, 128, 64

# size fields by name (a config has some of them; attribute_map aliases such as T5's d_model are covered)
_SIZES = {
    "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": 4 * HIDDEN,
    "vocab_size": VOCAB, "max_position_embeddings": POSITIONS, "n_positions": POSITIONS, "n_ctx": POSITIONS,
    "num_layers": LAYERS, "num_decoder_layers": LAYERS, "encoder_layers": LAYERS, "decoder_layers": LAYERS,
    "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS, "encoder_ffn_dim": 4 * HIDDEN,
    "decoder_ffn_dim": 4 * HIDDEN, "d_ff": 4 * HIDDEN, "d_kv": HIDDEN // HEADS, "n_inner": 4 * HIDDEN,
    "ffn_dim": 4 * HIDDEN, "word_embed_proj_dim": HIDDEN, "embedding_size": HIDDEN,
}
# per type: what the generic sizes cannot say (layouts to exercise, fields with other names)
OVERRIDES: dict[str, dict] = {
    "falcon": dict(new_decoder_architecture=True, num_kv_heads=2, multi_query=False),
    "codegen": dict(n_head=4, rotary_dim=8),
    "gptj": dict(rotary_dim=8),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]], window_size=8),
    "gpt_neox": dict(rotary_pct=0.5),
    "phi": dict(partial_rotary_factor=0.5),
    "stablelm": dict(partial_rotary_factor=0.25),
    "mpt": dict(d_model=HIDDEN, n_heads=HEADS, n_layers=LAYERS, expansion_ratio=4),
    "deberta-v2": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16,
                       position_buckets=8),
    "deberta": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16),
    "mixtral": dict(num_local_experts=2, num_experts_per_tok=1),
    "rwkv": dict(attention_hidden_size=HIDDEN, context_length=POSITIONS),
}
KV_HEADS = 2  # grouped-query where the config has num_key_value_heads


def tiny_config(model_type: str):
    """The model type's config with small sizes (composite configs: every sub-config too)."""
    cfg = tf.CONFIG_MAPPING[model_type]()
    for sub in [cfg] + [getattr(cfg, n) for n in ("text_config", "vision_config", "qformer_config", "audio_config")
                        if isinstance(getattr(cfg, n, None), tf.PretrainedConfig)]:
        _shrink(sub, OVERRIDES.get(model_type, {}))
    return cfg


def _shrink(cfg, overrides: dict) -> None:
    keys = set(cfg.to_dict()) | set(getattr(cfg, "attribute_map", {}))
    for name, value in _SIZES.items():
        if name in keys and getattr(cfg, name, None) is not None:
            setattr(cfg, name, value)
    if getattr(cfg, "num_key_value_heads", None) is not None:
        cfg.num_key_value_heads = KV_HEADS
    if getattr(cfg, "head_dim", None) is not None and "head_dim" in cfg.to_dict():
        cfg.head_dim = HIDDEN // HEADS
    for tok in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id"):
        if isinstance(getattr(cfg, tok, None), int):
            setattr(cfg, tok, min(getattr(cfg, tok), 2))
    for name, value in overrides.items():
        setattr(cfg, name, value)


def model_class(model_type: str):
    """The class a LoRA user fine-tunes: causal LM, else masked LM, else seq2seq LM, else the base model."""
    auto = tf.models.auto.modeling_auto
    for mapping in (auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
                    auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_MAPPING_NAMES):
        if model_type in mapping and not (mapping is auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES and model_type == "bart"):
            return getattr(tf, mapping[model_type])
    raise KeyError(model_type)


def build(model_type: str, attn: str = "eager") -> torch.nn.Module:
    """A tiny seeded model of `model_type` in eval mode with the given attention implementation."""
    torch.manual_seed(0)
    cfg = tiny_config(model_type)
    return model_class(model_type)._from_config(cfg, attn_implementation=attn).eval()
