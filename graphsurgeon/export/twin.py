"""Models too large to run here: the self-check runs on a shrunk twin of the config.

A model is checked on its twin when it was captured architecture-only (`--meta`) or when running it twice (the graph
here, model.py in the checking process) would need more than the memory budget ($GRAPHSURGEON_CHECK_MEMORY, e.g.
"16GB"; default half of this machine's memory). The twin is the same model class with every layer kind kept (the
config's per-layer lists such as `layer_types`, two layers of each), the same head counts and the same ratios of
head_dim to the widths, the widths divided by one factor (head_dim 16 where it divides); vocabulary and positions
stay. It is captured from a config-only folder (seeded random weights), given the same LoRAs on its layers, and its
model.py is written by the same code (export._write) and checked like any export (verify.run_check).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from graphsurgeon.errors import GraphsurgeonError

LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers",
                "num_decoder_layers")
WIDTHS = ("hidden_size", "n_embd", "d_model", "dim", "intermediate_size", "n_inner", "ffn_dim", "encoder_ffn_dim",
          "decoder_ffn_dim", "d_ff", "d_kv", "head_dim", "hidden_dim", "moe_intermediate_size",
          "shared_expert_intermediate_size", "word_embed_proj_dim", "embedding_size", "rotary_dim", "kv_channels")
TWIN_HEAD_DIM = 16
LAYERS_PER_KIND = 2


def memory_budget() -> int:
    """Bytes the self-check may use for two copies of the weights: $GRAPHSURGEON_CHECK_MEMORY or half the RAM."""
    text = os.environ.get("GRAPHSURGEON_CHECK_MEMORY", "").strip()
    if not text:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.upper())
    if not m:
        raise GraphsurgeonError(f"GRAPHSURGEON_CHECK_MEMORY={text!r} is not a size; give one like 16GB or 500MB.")
    return int(float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2) or "_"))


def weight_bytes(cm) -> int:
    seen, total = set(), 0
    for t in list(cm.gm.parameters()) + list(cm.gm.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def why_twin(cm) -> str:
    """Why the check runs on a twin ("" when the model runs here)."""
    if cm.materializes_to:  # an architecture-only capture
        return "captured architecture-only (--meta)"
    need, budget = 2 * weight_bytes(cm), memory_budget()
    if need > budget:
        return f"running it twice needs {need / 2**30:.1f} GiB, over the check's budget of {budget / 2**30:.1f} GiB"
    return ""


def runs_here(cm) -> bool:
    return not why_twin(cm)


def _layer_count(config: dict) -> tuple[str, int] | None:
    for key in LAYER_COUNTS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return key, config[key]
    return None


def _per_layer(config: dict, n: int) -> dict:
    """The config's per-layer fields: lists (or pattern strings) with one entry per layer."""
    out = {}
    for key, value in config.items():
        if key == "architectures":
            continue
        if isinstance(value, list) and len(value) == n and all(isinstance(v, (str, bool, int)) for v in value):
            out[key] = value
        elif isinstance(value, str) and len(value) == n and ("pattern" in key or "layer" in key):
            out[key] = value
    return out


def kept_layers(config: dict, lora_layers: dict[int, frozenset]) -> list[int]:
    """The layers the twin keeps: per layer kind (its per-layer config entries), two — the first of each distinct
    set of LoRAs first, so layers with and without a LoRA are both kept where both exist."""
    found = _layer_count(config)
    if not found:
        return []
    n = found[1]
    per_layer = _per_layer(config, n)
    kinds: dict[tuple, list[int]] = {}
    for i in range(n):
        kinds.setdefault(tuple(v[i] for v in per_layer.values()), []).append(i)
    kept = []
    for layers in kinds.values():
        first: dict[frozenset, int] = {}
        for i in layers:
            first.setdefault(lora_layers.get(i, frozenset()), i)
        chosen = list(first.values())[:LAYERS_PER_KIND]
        chosen += [i for i in layers if i not in chosen][:LAYERS_PER_KIND - len(chosen)]
        kept += chosen
    return sorted(kept)


def _factor(config: dict) -> int:
    """The largest factor ≤ head_dim / 16 that divides every width and keeps the rotary part an even width."""
    hidden = next((config[k] for k in ("hidden_size", "n_embd", "d_model", "dim") if isinstance(config.get(k), int)), 0)
    heads = next((config[k] for k in ("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads")
                  if isinstance(config.get(k), int)), 0)
    head_dim = config.get("head_dim") if isinstance(config.get("head_dim"), int) else (hidden // heads if heads else 0)
    widths = [config[k] for k in WIDTHS if isinstance(config.get(k), int) and config[k] > 0]
    rotary = config.get("partial_rotary_factor")
    for f in range(max(1, head_dim // TWIN_HEAD_DIM), 0, -1):
        if any(w % f for w in widths) or head_dim % f or (head_dim // f) % 2:
            continue
        if isinstance(rotary, (int, float)) and not float(head_dim // f * rotary).is_integer():
            continue
        if isinstance(rotary, (int, float)) and int(head_dim // f * rotary) % 2:
            continue
        return f
    return 1


def twin_config(config: dict, model_class: str, lora_layers: dict[int, frozenset]) -> tuple[dict, list[int]]:
    """(the twin's config, the original layers it keeps, in order)."""
    twin = json.loads(json.dumps(config, default=str))
    twin["architectures"] = [model_class]
    kept = kept_layers(config, lora_layers)
    found = _layer_count(config)
    if found:
        n = found[1]
        for key, value in _per_layer(config, n).items():
            picked = [value[i] for i in kept]
            twin[key] = "".join(picked) if isinstance(value, str) else picked
        for key in LAYER_COUNTS:
            if isinstance(config.get(key), int) and config[key] > 0:
                twin[key] = len(kept) if config[key] == n else min(config[key], LAYERS_PER_KIND)
    f = _factor(config)
    for key in WIDTHS:
        if isinstance(config.get(key), int) and config[key] > 0:
            twin[key] = config[key] // f
    return twin, kept


def _lora_layers(cm) -> dict[int, frozenset]:
    by_layer: dict[int, set] = {}
    for b in cm.loras.values():
        if b.target.layer is not None:
            by_layer.setdefault(b.target.layer, set()).add(b.target.role)
    return {k: frozenset(v) for k, v in by_layer.items()}


def build_twin(cm):
    """(the twin's CapturedModel with the same LoRAs, its config): captured from a config-only folder."""
    from graphsurgeon.capture import capture
    from graphsurgeon.surgery import add_lora

    if not cm.config:
        raise GraphsurgeonError(f"{cm.model_class} is too large to check here ({why_twin(cm)}) and has no config to "
                                "shrink; set GRAPHSURGEON_CHECK_MEMORY higher to check it at its own size.")
    config, kept = twin_config(cm.config, cm.model_class, _lora_layers(cm))
    folder = Path(tempfile.mkdtemp(prefix="graphsurgeon-twin-"))
    try:
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        twin = capture(str(folder), eager_attention=cm.attn_implementation == "eager")
    except GraphsurgeonError as err:
        from graphsurgeon.export.verify import SelfCheckError

        raise SelfCheckError(f"the self-check's shrunk twin of {cm.model_class} could not be captured: {err}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    groups: dict[str, tuple] = {}  # the same LoRA on the twin's layers that are the kept originals
    for b in cm.loras.values():
        if b.kind != "add":
            continue  # a bare LoRA Layer wired by hand is not replayed on the twin
        key = json.dumps([b.target.role, b.config.as_dict()], sort_keys=True)
        role, config_, layers = groups.setdefault(key, (b.target.role, b.config, set()))
        if b.target.layer is None:
            layers.add("all")
        elif b.target.layer in kept:
            layers.add(str(kept.index(b.target.layer)))
    for role, lora_config, layers in groups.values():
        if layers:
            add_lora(twin, roles=(role,), layers="all" if "all" in layers else ",".join(sorted(layers)),
                     config=lora_config)
    return twin, config


def twin_check(cm, folder: Path) -> tuple[str, float]:
    """Write and check the twin's model.py by the export's own code; (summary line, max diff)."""
    from graphsurgeon.export import _write
    from graphsurgeon.export.verify import _start_runner, run_check

    why = why_twin(cm)
    twin, config = build_twin(cm)
    twin.kv_cache_off = cm.kv_cache_off  # written as model.py itself is
    twin_folder = Path(tempfile.mkdtemp(prefix="graphsurgeon-twin-export-"))
    runner = _start_runner(twin_folder)
    try:
        _write(twin, twin_folder)
        text, diff = run_check(twin, twin_folder, runner, what="the shrunk twin's model.py")
    finally:
        runner.close()
        shutil.rmtree(twin_folder, ignore_errors=True)
    layers = _layer_count(config)
    hidden = next((config[k] for k in ("hidden_size", "n_embd", "d_model", "dim") if isinstance(config.get(k), int)), None)
    shape = ", ".join(p for p in (f"{layers[1]} layers" if layers else "", f"hidden {hidden}" if hidden else "") if p)
    return f"{text} (model.py itself is {why}; its twin has {shape})", diff
