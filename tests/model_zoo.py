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
    "image_size": 28, "patch_size": 14,  # vision towers: a 2×2-patch image
}
# per type: what the generic sizes cannot say (layouts to exercise, fields with other names)
OVERRIDES: dict[str, dict] = {
    "falcon": dict(new_decoder_architecture=True, num_kv_heads=2, multi_query=False),
    "codegen": dict(n_head=4, rotary_dim=8),
    "gptj": dict(rotary_dim=8),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]], window_size=8, num_heads=HEADS),
    "gpt_neox": dict(rotary_pct=0.5),
    "phi": dict(partial_rotary_factor=0.5),
    "stablelm": dict(partial_rotary_factor=0.25),
    "mpt": dict(d_model=HIDDEN, n_heads=HEADS, n_layers=LAYERS, expansion_ratio=4, max_seq_len=POSITIONS),
    "deberta-v2": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16,
                       position_buckets=8),
    "deberta": dict(relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16),
    "mixtral": dict(num_local_experts=2, num_experts_per_tok=1),
    "blip-2": dict(num_query_tokens=4, image_token_index=100),
    "rwkv": dict(attention_hidden_size=HIDDEN, context_length=POSITIONS),
}
KV_HEADS = 2  # grouped-query where the config has num_key_value_heads


def tiny_config(model_type: str):
    """The model type's config with small sizes (composite configs: every sub-config too).

    Built from keyword arguments, so fields derived at construction (GPT-Neo's attention_layers) follow.
    """
    cls = tf.CONFIG_MAPPING[model_type]
    default = cls()
    kwargs = _small(default, OVERRIDES.get(model_type, {}))
    for name in ("text_config", "vision_config", "qformer_config", "audio_config"):
        sub = getattr(default, name, None)
        if isinstance(sub, tf.PretrainedConfig):
            kwargs[name] = {**sub.to_dict(), **_small(sub, {})}
    return cls(**kwargs)


def _small(cfg, overrides: dict) -> dict:
    """Keyword arguments that shrink `cfg`: the size fields it has, GQA heads, small token ids, overrides."""
    fields = cfg.to_dict()
    aliases = getattr(cfg, "attribute_map", {})
    out = {}
    for name, value in _SIZES.items():
        key = aliases.get(name, name)
        if key in fields and fields[key] is not None:
            out[key] = value
    if fields.get("num_key_value_heads") is not None:
        out["num_key_value_heads"] = KV_HEADS
    if fields.get("head_dim") is not None:
        out["head_dim"] = HIDDEN // HEADS
    for tok in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id"):
        if isinstance(fields.get(tok), int):
            out[tok] = min(fields[tok], 2)
    n = fields.get(aliases.get("num_hidden_layers", "num_hidden_layers"))
    for key, value in fields.items():  # per-layer fields follow the layer count
        if isinstance(value, list) and n and len(value) == n and key not in out:
            out[key] = value[:LAYERS]
        elif isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
            out[key] = {k: v for k, v in value.items() if int(k) < LAYERS}
    out.update(overrides)
    return out


# transformers 5.24's Llama4ForConditionalGeneration cannot run a text-only forward (it reads image outputs that are
# not there), so its text model is what PEFT users fine-tune: Llama4ForCausalLM on the text config
TEXT_MODEL = {"llama4": "Llama4ForCausalLM"}


def model_class(model_type: str):
    """The class a LoRA user fine-tunes: seq2seq LM for encoder-decoders, masked LM for encoders, causal LM for
    decoders, else the base model."""
    if model_type in TEXT_MODEL:
        return getattr(tf, TEXT_MODEL[model_type])
    auto = tf.models.auto.modeling_auto
    seq2seq = getattr(tiny_config(model_type), "is_encoder_decoder", False)
    order = ([auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES] if seq2seq else []) + [
        auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_MAPPING_NAMES]
    config_class = tf.CONFIG_MAPPING[model_type]
    for mapping in order:
        cls = getattr(tf, mapping[model_type]) if model_type in mapping else None
        if cls is not None and issubclass(config_class, cls.config_class):  # Llama4ForCausalLM wants the text config
            return cls
    raise KeyError(model_type)


def save(model_type: str, folder) -> str:
    """The tiny model written with save_pretrained (config.json + model.safetensors): a folder a user would pass."""
    model = build(model_type, attn="eager")
    model.save_pretrained(str(folder), safe_serialization=True)
    return str(folder)


def build(model_type: str, attn: str = "eager") -> torch.nn.Module:
    """A tiny seeded model of `model_type` in eval mode with the given attention implementation."""
    torch.manual_seed(0)
    cfg = tiny_config(model_type)
    cls = model_class(model_type)
    if not isinstance(cfg, cls.config_class):  # a text model of a multimodal type (TEXT_MODEL)
        cfg = cfg.text_config
    model = cls._from_config(cfg, attn_implementation=attn).eval()
    with torch.no_grad():  # learned inputs a fresh model starts at zero (BLIP-2's query tokens): as if trained
        for name, p in model.named_parameters():
            if name.endswith("query_tokens") and not p.any():
                p.normal_(std=1.0, generator=torch.Generator().manual_seed(1))
    return model


def example_inputs(model_type: str, config, batch: int = 2, text: int = 6) -> dict | None:
    """Inputs a model needs beyond token ids, as its processor would build them (None: token ids are enough).

    BLIP-2 reads an image and input_ids that start with num_query_tokens image tokens.
    """
    if model_type != "blip-2":
        return None
    gen = torch.Generator().manual_seed(0)
    vision = config.vision_config
    image_tokens = torch.full((batch, config.num_query_tokens), config.image_token_index)
    ids = torch.cat([image_tokens, torch.randint(3, 50, (batch, text), generator=gen)], 1)
    pixels = torch.randn(batch, getattr(vision, "num_channels", 3), vision.image_size, vision.image_size, generator=gen)
    return {"input_ids": ids, "pixel_values": pixels}
