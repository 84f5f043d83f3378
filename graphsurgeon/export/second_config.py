"""The self-check of model.py's sizes: built at a second config, model.py equals Hugging Face at that config.

model.py reads its sizes from config.json (codegen/config.py solves each number at the model's config and at two
probe configs). This check proves it at a config nobody solved at: the model's config shrunk as the twin's
(export/twin.py: widths down to head_dim 16, two layers per kind) and the vocabulary to at most 1,024, special token
ids past it unset (both only to keep it cheap), then grown the way a user grows a model (`grown`). Hugging Face builds its model there (random
weights, float32); model.py — the written file, in the self-check's process — is loaded with `load_model` from a
folder holding that config.json and that model's tensors, and runs the self-check's padded case. Every output must
equal Hugging Face's within float32's tolerance, and Hugging Face's state dict must hold no tensor model.py lacks (a
layer count written as a literal loads a deeper model's first layers without a word).

Where model.py fails or differs, SecondConfigRefused: when the same config passes at the model's own layer count,
head counts, or both, the export writes model.py again with a Config that pins those fields (another value is
refused in a sentence); else with every size a literal and a Config that pins every size field (codegen/config.py,
`pinned`, `literal`) — loud where it would be silently wrong. A config Hugging Face itself refuses is not a check: the
next, smaller move is tried; none left, the line says model.py's sizes were not checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from graphsurgeon.export.codegen.probes import LAYERS, per_layer_lists, probe_config
from graphsurgeon.export.verify import SelfCheckError, compare

HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
WIDTH = re.compile(r"size|dim|embd|hidden|width|proj|d_model")  # a field that moves with an equal hidden size
NOT_A_WIDTH = re.compile(r"head|vocab|position|intermediate|expert|_token_id|bucket|chunk|window|layers")
VOCAB_CAP = 1024  # the check's vocabulary: at most this many (+ the move's 11)
TOLERANCE = 1e-5  # float32, as the self-check's


class SecondConfigRefused(SelfCheckError):
    """model.py is the captured model at its own config but not Hugging Face's at another: the export writes it again,
    its Config pinning `pin` (config field -> value: the layer count or head counts, where the same config with the
    model's own passes), or with every size a literal (`pin` None)."""

    def __init__(self, message: str, pin: dict | None = None):
        super().__init__(message)
        self.pin = pin


def grown(cfg: dict, move: int, pinned=()) -> dict:
    """The fields a user's change sets, by how far `move` goes: 0 — one layer more (per-layer lists such as
    layer_types repeated), the hidden size ×3 with the attention heads and key/value heads ×2 (so the head size
    moves ×1.5 too), intermediate sizes + 32, vocabulary + 11; 1 — one layer more, the hidden size ×1.5 (heads
    kept), intermediate + 32, vocabulary + 11; 2 — one layer more. Every field equal to the hidden size (an
    embedding or projection size: OPT's word_embed_proj_dim, ELECTRA's embedding_size) moves with it, so the
    model keeps the modules it has (Hugging Face builds other modules where they differ). `pinned`: fields model.py's
    Config refuses to change (not moved, nor the per-layer lists with a pinned layer count)."""
    out: dict = {}
    layers = next((k for k in LAYERS if isinstance(cfg.get(k), int) and cfg[k] > 0), None)
    if layers is not None and layers not in pinned:
        out[layers] = cfg[layers] + 1
        out.update(per_layer_lists(cfg, out))
    if move == 2:
        return out
    hidden_key = next((k for k in HIDDEN if isinstance(cfg.get(k), int) and cfg[k] > 0), None)
    if hidden_key is not None:
        hidden = cfg[hidden_key]
        num, den = (3, 1) if move == 0 else (3, 2)
        if hidden * num % den == 0:
            for k, v in cfg.items():
                if type(v) is int and v == hidden and WIDTH.search(k) and not NOT_A_WIDTH.search(k):
                    out[k] = v * num // den
    if move == 0:
        out.update({k: v * 2 for k, v in head_fields(cfg).items()})
    out.update(coupled_head_size(cfg, out, hidden_key))
    for k, v in cfg.items():
        if type(v) is int and v > 0 and "intermediate" in k and k not in out:
            out[k] = v + 32
    if type(cfg.get("vocab_size")) is int:
        out["vocab_size"] = cfg["vocab_size"] + 11
    return {k: v for k, v in out.items() if k not in pinned}


def size_fields(cfg: dict, used: dict) -> dict:
    """What a Config pins when every size of model.py is a literal: the fields it read, and every size, rate and
    per-layer list of the config that the probes move (codegen/probes.py) — read or not, another value of one would
    not change the literals."""
    moved = probe_config(cfg, 0)
    moved.update(per_layer_lists(cfg, moved))
    return {**used, **{k: cfg[k] for k in moved if k in cfg}}


def layer_fields(cfg: dict) -> dict:
    """The config's layer count and its per-layer lists (what pinning the layer count pins), with their values."""
    layers = next((k for k in LAYERS if isinstance(cfg.get(k), int) and cfg[k] > 0), None)
    if layers is None:
        return {}
    lists = per_layer_lists(cfg, {layers: cfg[layers] + 1})
    return {k: cfg[k] for k in [layers, *lists]}


def coupled_head_size(cfg: dict, out: dict, hidden_key: str | None) -> dict:
    """A head size field (head_dim, d_kv, kv_channels) that is hidden / heads in `cfg` stays so in the grown config
    (×1.5 with the moves above; Hugging Face's classes that build o_proj as hidden × hidden need it); one apart from
    hidden / heads stays as it is."""
    heads_key = min(head_fields(cfg), key=lambda k: "kv" in k or "key_value" in k, default=None)  # the queries
    if hidden_key is None or heads_key is None or hidden_key not in out:
        return {}
    hidden, heads = out[hidden_key], out.get(heads_key, cfg[heads_key])
    return {k: hidden // heads for k in ("head_dim", "d_kv", "kv_channels")
            if type(cfg.get(k)) is int and cfg[k] * cfg[heads_key] == cfg[hidden_key] and hidden % heads == 0}


def head_fields(cfg: dict) -> dict:
    """The config's head counts (attention heads, key/value heads), with their values."""
    return {k: v for k, v in cfg.items() if type(v) is int and v > 0 and "head" in k
            and not any(w in k for w in ("dim", "size"))}


def base_config(cm) -> dict:
    """The model's config, shrunk as the twin's (its own layer count where a LoRA sits on a layer the twin has not)
    and its vocabulary to VOCAB_CAP (only to keep the check cheap)."""
    from graphsurgeon.export.twin import twin_config

    cfg, _ = twin_config(cm.config, cm.model_class, {})
    lora_layers = [b.target.layer for b in cm.loras.values() if b.target.layer is not None]
    count = next((cfg[k] for k in LAYERS if type(cfg.get(k)) is int), None)
    if lora_layers and count is not None and count <= max(lora_layers):  # LORAS names the model's own layers
        cfg.update(layer_fields(cm.config))
    if type(cfg.get("vocab_size")) is int and cfg["vocab_size"] > VOCAB_CAP:  # a special token id past the cap: None
        cfg["vocab_size"] = VOCAB_CAP  # (GPT-2's 50256 would keep 50k rows: most of the check's time)
        for k, v in list(cfg.items()):
            if k.endswith("_token_id") and type(v) is int and v >= VOCAB_CAP:
                cfg[k] = None
            elif k.endswith("_token_ids") and isinstance(v, list):
                cfg[k] = [x for x in v if not (type(x) is int and x >= VOCAB_CAP)] or None
    return cfg


def check_second_config(cm, folder: Path, runner) -> str:
    """Run model.py (in the self-check's `runner`) at a second config against Hugging Face there: the line for the
    export's output, or SecondConfigRefused. A failure of the check itself (not of model.py) is said, not raised:
    it must not refuse an export the graph check passed."""
    try:
        return _check(cm, folder, runner)
    except SecondConfigRefused:
        raise
    except Exception as err:  # noqa: BLE001 - the line says the sizes went unchecked, and why
        text = str(err).strip().splitlines()
        return f"sizes not checked at a second config ({type(err).__name__}: {text[0][:160] if text else ''})"


def _check(cm, folder: Path, runner) -> str:
    inputs = _inputs(cm)
    if inputs is None:
        return "sizes not checked at a second config (the model takes more than token ids)"
    pinned = set(cm.sizes_fixed_fields)
    base = {**base_config(cm), **_exported(cm, pinned)}  # a pinned field at the exported value
    refused = []
    for move in range(3):
        changes = grown(base, move, pinned)
        if not changes:
            continue
        found = _compare(cm, folder, runner, base, changes, inputs)
        if isinstance(found, float):
            return (f"sizes checked against Hugging Face at a second config "
                    f"({_changes_text(cm.config, {**base, **changes})}): max diff {found:.0e}")
        if found.startswith("HF "):
            refused.append(found[3:])
            continue
        raise SecondConfigRefused(found, _fields_to_pin(cm, folder, runner, base, move, pinned, inputs))
    if not refused:
        return "sizes not checked at a second config (its config has no layer count, hidden size or vocabulary to move)"
    return f"sizes not checked at a second config (Hugging Face refuses each: {refused[-1]})"


def _fields_to_pin(cm, folder: Path, runner, base: dict, move: int, pinned: set, inputs: dict) -> dict | None:
    """The fields to pin when the same move passes with the model's own layer count, head counts, or both (model.py's
    widths follow the config; its layers or heads do not), else None (every size a literal)."""
    layers = {k: cm.config[k] for k in layer_fields(base) if k in cm.config}
    heads = {k: cm.config[k] for k in head_fields(base) if k in cm.config}
    for group in (layers, heads, {**layers, **heads}):
        if not group or set(group) <= pinned:
            continue
        at = {**base, **group}  # the group at the model's own values (the base may have the twin's layer count)
        changes = grown(at, move, pinned | set(group))
        if changes and isinstance(_compare(cm, folder, runner, at, changes, inputs), float):
            return {**cm.sizes_fixed_fields, **group}
    return None


def _exported(cm, fields) -> dict:
    """The model's own values of `fields`."""
    return {k: cm.config[k] for k in fields if k in cm.config}


def _compare(cm, folder: Path, runner, base: dict, changes: dict, inputs: dict):
    """model.py against Hugging Face at `base` with `changes`: the max diff (float) when they agree, "HF …" when
    Hugging Face refuses that config, else the sentence on how model.py fails there."""
    cfg = {**base, **changes}
    built = _hf_at(cm, cfg, inputs)
    if isinstance(built, str):
        return "HF " + built
    hf, want = built
    _run_model_py(runner, folder, cfg, hf, inputs, want)
    at = f"at a second config ({_changes_text(cm.config, cfg)})"
    got, error, unexpected = _results(runner.work / "second")
    if error:
        return f"{at} model.py fails{error}"
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        return (f"{at} Hugging Face's model has tensors model.py has not ({unexpected[0]!r}{more}): its layer count "
                "or a module is fixed")
    worst = 0.0
    for name, w in want.items():
        if name not in got:
            return f"{at} model.py returns no {name!r}"
        diff, ok = compare(got[name], w, TOLERANCE)
        worst = max(worst, diff)
        if not ok:
            return (f"{at} model.py differs from Hugging Face there (max diff {diff:.1e} on {name!r}, tolerance "
                    f"{TOLERANCE:g})")
    return worst


def _inputs(cm) -> dict[str, torch.Tensor] | None:
    """The self-check's last case (padding included) with token ids below the check's vocabulary; None when an
    input is floating point (its sizes may be the config's)."""
    from graphsurgeon.export.verify_cases import cases

    _, x = cases(cm)[-1]
    if any(t.is_floating_point() for t in x.values()):
        return None
    return {k: t % VOCAB_CAP if "input_ids" in k else t for k, t in x.items()}


def _hf_at(cm, cfg: dict, inputs: dict):
    """(Hugging Face's model at `cfg` with seeded random weights, its outputs on `inputs` by output name), or a
    sentence on why Hugging Face refuses that config."""
    import transformers

    try:
        config = transformers.AutoConfig.for_model(**cfg)
        if cm.attn_implementation:
            config._attn_implementation = cm.attn_implementation
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # seeded weights; the caller's generator untouched
            torch.manual_seed(0)
            hf = getattr(transformers, cm.model_class)(config).float().eval()
            out = hf(**inputs)
    except Exception as err:  # noqa: BLE001 - Hugging Face's own refusal: not model.py's failure
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0] if text else ''}"[:200]
    want = {n: out[n] for n in cm.output_names if n in out.keys() and isinstance(out[n], torch.Tensor)}
    return (hf, want) if want else "no output of the graph's names"


def _run_model_py(runner, folder: Path, cfg: dict, hf, inputs: dict, want: dict) -> None:
    """Write the second config's folder (config.json, Hugging Face's tensors, the inputs) and have the runner load
    model.py there and run it."""
    work = runner.work / "second"
    work.mkdir(exist_ok=True)
    for stale in ("outputs.safetensors", "error.json", "unexpected.json"):
        (work / stale).unlink(missing_ok=True)
    (work / "config.json").write_text(json.dumps(cfg, default=str), encoding="utf-8")
    tensors = {**dict(hf.named_buffers()), **hf.state_dict()}
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(work / "model.safetensors"))
    (work / "persistent.json").write_text(json.dumps(list(hf.state_dict())), encoding="utf-8")
    (work / "names.json").write_text(json.dumps(list(want)), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(work / "inputs.safetensors"))
    runner.send(f"second {work}")
    if runner.wait_line() != "done":  # model.py took the process down there (it is run again, fixed, in a new one)
        raise SecondConfigRefused(f"at a second config model.py ended the check's process{runner.failure()}")


def _results(work: Path) -> tuple[dict, str, list]:
    """(model.py's outputs, " in …: Error" when it failed, Hugging Face's tensors model.py has not)."""
    if (work / "error.json").exists():
        at = json.loads((work / "error.json").read_text(encoding="utf-8"))
        place = f" in {at['function']}, line {at['line']} (`{at.get('code', '')[:80]}`)" if "line" in at else ""
        module = f" in the module {at['module']}" if at.get("module") else ""
        return {}, f"{module}{place}: {at['error']}", []
    unexpected = json.loads((work / "unexpected.json").read_text(encoding="utf-8"))
    return load_file(str(work / "outputs.safetensors")), "", unexpected


def _changes_text(before: dict, after: dict) -> str:
    """"n_layer 2 → 3, n_embd 64 → 192, …": the sizes that differ from the model's own config."""
    keys = [k for k in after if type(after.get(k)) is int and before.get(k) != after[k]]
    return ", ".join(f"{k} {before.get(k)} → {after[k]}" for k in keys)
