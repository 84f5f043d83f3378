"""The probe configs model.py's sizes are solved at (codegen/config.py): the model's config with its size fields moved
apart, so that each field has values of its own.

Moves: layers +1 / +2, heads ×6, key/value heads ×3, hidden ×12 / ×18 so head_dim ×2 / ×3, a head_dim field ×3 / ×2
apart from them unless the config refuses, an embedding size ×10 / ×15, other widths ×5 / ×7, vocabulary ×7 / ×11,
positions (relative ones and buckets too) ×11 / ×13, experts ×4 / ×8 and experts per token +2 / +3, each rate and
epsilon nudged by its own amount, per-layer lists such as layer_types repeated to the new layer count. The Hugging Face
model is built at its config and at both probes on the meta device (`three_models`).
"""

from __future__ import annotations

import functools
import math
import re

import torch

LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers",
          "num_decoder_layers")
HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
EMBEDDINGS = ("word_embed_proj_dim", "embedding_size")  # often the hidden size, but a size of their own (ALBERT,
# ELECTRA's generator, OPT's projection): moved apart from it, less (×10 / ×15: MobileBERT reads hidden − embedding)
HEAD_DIMS = ("head_dim", "d_kv", "kv_channels", "rotary_dim")
VOCAB = ("vocab_size",)
POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len")


# the probes' moves: (layers +, heads ×, key/value heads ×, hidden ×, head_dim ×, other widths ×, vocab ×, positions ×)
MOVES = ((1, 6, 3, 12, 2, 5, 7, 11), (2, 6, 3, 18, 3, 7, 11, 13))


def probe_config(real: dict, which: int, coupled: bool = True, experts: bool = True) -> dict:
    """Probe `which`'s fields: sizes moved apart so each has a value of its own (see the module docstring).
    Not coupled: a head_dim field moves unlike hidden / heads (×3 where they move ×2), so `heads * head_dim` and
    `hidden` are told apart even where the model's own config has them equal."""
    layers, heads, kv, hidden, head_dim, widths, vocab, positions = MOVES[which]
    head_dim = head_dim if coupled else MOVES[1 - which][4]
    out = {}
    rates = 0
    for k, v in real.items():
        if k.endswith(("_token_id", "_token_ids")):
            continue
        if isinstance(v, int) and v > 0:
            if k in LAYERS:
                out[k] = v + layers
            elif "head" in k and not any(w in k for w in ("dim", "size")):  # key/value heads divide the heads
                out[k] = v * (kv if ("kv" in k or "key_value" in k) else heads)
            elif k in HIDDEN:
                out[k] = v * hidden
            elif k in EMBEDDINGS:
                out[k] = v * (10 + 5 * which)
            elif k in HEAD_DIMS:
                out[k] = v * head_dim
            elif "expert" in k and ("per_tok" in k or "top" in k):  # experts per token (+2 / +3: fewer than the
                if experts:  # experts, apart from the layers' +1 / +2)
                    out[k] = v + 2 + which
            elif re.search(r"num_(local_)?experts$|n_routed_experts$", k):  # ×4 / ×8: like no other size's moves
                if experts:
                    out[k] = v * 4 * (which + 1)
            elif k in VOCAB:
                out[k] = v * vocab
            elif k in POSITIONS or re.search(r"relative_positions|position_buckets|num_buckets$", k):
                out[k] = v * positions
            elif re.search(r"size|dim|inner|ffn|d_ff|intermediate", k):
                out[k] = v * widths
        elif isinstance(v, float) and 0 <= v < 1 and k != "initializer_range":
            rates += 1
            step = rates * (which + 1)
            out[k] = v * (1 + step / 64) if v > 0 else step / 1024
    return out


def per_layer_lists(fields: dict, probe: dict) -> dict:
    """The config's per-layer lists (`layer_types`, `swiglu_limits`: one entry per layer) at the probe's layer count,
    the pattern repeated as the layers grow (a config checks that they have one entry per layer)."""
    out = {}
    for k in LAYERS:
        n, m = fields.get(k), probe.get(k)
        if not (isinstance(n, int) and isinstance(m, int) and n > 1 and m != n):
            continue
        for name, v in fields.items():
            if name not in out and name != "architectures" and not name.endswith(("_token_id", "_token_ids")) \
                    and isinstance(v, list) and len(v) == n and all(_scalar(x) for x in v):
                out[name] = [v[i % n] for i in range(m)]
    return out


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


@functools.lru_cache(maxsize=4)  # the editor regenerates the code after every edit: build the models once
def three_models(model_class: str, config_json: str):
    """(config class name, its attribute_map, the three configs' numeric fields, the fields the probes move, the
    three models on the meta device), or None for a model transformers does not name."""
    import json

    import transformers

    cfg = json.loads(config_json)
    model_type = cfg.get("model_type")
    cls = getattr(transformers, model_class, None)
    if model_type not in transformers.CONFIG_MAPPING or cls is None:
        return None
    config_cls = transformers.CONFIG_MAPPING[model_type]
    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    real = {k: v for k, v in fields.items() if number(v)}
    # head_dim moved apart from hidden / heads, experts moved; then what a config that checks them accepts
    tries = [(False, True), (True, True), (False, False), (True, False)]
    for n, (coupled, experts) in enumerate(tries, 1):
        cfgs = [real] + [{**real, **probe_config(real, i, coupled, experts)} for i in (0, 1)]
        try:
            models = [_meta_model(cls, config_cls(**{**fields, **per_layer_lists(fields, c), **c}), cfg) for c in cfgs]
            break
        except Exception:  # noqa: BLE001 - the config or model refuses these sizes
            if n == len(tries):
                raise
    return (config_cls.__name__, dict(getattr(config_cls, "attribute_map", {})), cfgs,
            set(probe_config(real, 0, coupled, experts)), models)


def _meta_model(cls, config, cfg: dict):
    import transformers

    attn = cfg.get("_attn_implementation") or "eager"
    try:
        config._attn_implementation = attn
    except Exception:  # noqa: BLE001
        pass
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            return cls(config)
    finally:
        transformers.logging.set_verbosity(verbosity)


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
