"""Non-persistent buffers model.py computes from its config, as Hugging Face's `__init__` does (a rotary embedding's
`inv_freq`, BERT's `position_ids`), instead of reading them from model.safetensors.

A class that computes buffers gets `init_buffers(self, config)` (its `__init__` calls it; `load_model`, which builds
on the meta device, calls it again). Each recipe is lines of Python over `config` and is checked before it is used:
run here at the exported config it gives the captured buffer exactly, at the two probe configs of config.py it gives
the Hugging Face buffer's shape, and for a module without parameters (a rotary embedding) Hugging Face's own module
built at the probe configs gives the same values. A buffer no recipe gives stays in model.safetensors; a rotary
embedding whose rope type has no recipe says so in a comment.
"""

from __future__ import annotations

import types

import torch

from graphsurgeon.export.codegen.config import ConfigSizes

# rope types past the default inverse frequencies: the lines that scale them (Hugging Face's modeling_rope_utils);
# "dynamic" starts from the default (it rescales only past max_position_embeddings, which the graph does not)
ROPE = "config.rope_parameters"
ROPE_SCALING = {
    "default": [],
    "dynamic": [],
    "linear": [f'inv_freq = inv_freq / {ROPE}["factor"]'],
    "llama3": [
        f'factor = {ROPE}["factor"]',
        f'low_freq_factor = {ROPE}["low_freq_factor"]',
        f'high_freq_factor = {ROPE}["high_freq_factor"]',
        f'old_context_len = {ROPE}["original_max_position_embeddings"]',
        "low_freq_wavelen = old_context_len / low_freq_factor",
        "high_freq_wavelen = old_context_len / high_freq_factor",
        "wavelen = 2 * torch.pi / inv_freq",
        "inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)",
        "smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)",
        "smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama",
        "is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)",
        "inv_freq = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)",
    ],
}
INV_FREQ = "inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))"


class Buffers:
    """`computed`: buffer name -> the lines of init_buffers that compute and register it; `kept`: buffer name -> why
    one Hugging Face computes is read from model.safetensors (a comment on its line)."""

    def __init__(self, cm, sizes: ConfigSizes, tensors: dict[str, torch.Tensor], buffers: set[str]) -> None:
        self.computed: dict[str, list[str]] = {}
        self.kept: dict[str, str] = {}
        if not sizes.active or not cm.config:
            return
        for name in sorted(buffers):
            owner, _, leaf = name.rpartition(".")
            mods = sizes.modules(owner)
            if mods is None or leaf not in getattr(mods[0], "_non_persistent_buffers_set", ()):
                continue
            value = tensors[name]
            if value.is_meta:  # an architecture-only capture: Hugging Face's own module gives the values
                value = _hf_buffer(mods[0], leaf) if next(mods[0].parameters(), None) is None else None
            before = dict(sizes.used)
            for lines in _candidates(cm, sizes, name, leaf, mods, value) if value is not None else ():
                if _checks(lines, leaf, cm.config, sizes, mods, value):
                    self.computed[name] = lines
                    break
                sizes.used.clear()  # a rejected recipe's fields are not the dataclass's
                sizes.used.update(before)
            else:
                rope = _rope_type(cm.config, mods[0], leaf)
                if leaf.endswith("inv_freq") and rope is not None:
                    self.kept[name] = f"rope type {rope!r}: read from model.safetensors, not computed here"
            if name in self.computed and any("config.rope_parameters" in ln for ln in self.computed[name]):
                sizes.used.setdefault("rope_parameters", cm.config["rope_parameters"])

    def lines_of(self, path: str) -> list[str]:
        """init_buffers' body for the module at `path` (empty: it computes nothing)."""
        out: list[str] = []
        for name, lines in self.computed.items():
            if name.rpartition(".")[0] == path:
                out += lines
        return out


def _candidates(cm, sizes: ConfigSizes, name: str, leaf: str, mods: list, value: torch.Tensor):
    """Recipes for the buffer, most like Hugging Face's first (each: lines ending in its register_buffer)."""
    register = f'self.register_buffer("{leaf}", {{}}, persistent=False)'
    flat = value.reshape(-1)
    if not value.is_floating_point() and value.dim() in (1, 2) and value.shape[0] == value.numel() // flat.numel() \
            and torch.equal(flat, torch.arange(flat.numel(), dtype=value.dtype)):
        n = sizes.shape(name, tuple(value.shape))[-1]
        yield [register.format(f"torch.arange({n})" + (".expand((1, -1))" if value.dim() == 2 else ""))]
    if value.dim() == 0 and value.is_floating_point():  # Gemma's embed_scale: a number of the module, as a tensor
        for attr, v in vars(mods[0]).items():
            if _number(v) and float(torch.tensor(float(v), dtype=value.dtype)) == value.item():
                found = sizes.solve(tuple(getattr(m, attr, None) for m in mods), sizes.prefer(name.rpartition(".")[0]))
                if found is not None:
                    yield [register.format(f"torch.tensor({found.text})")]
    if leaf.endswith("inv_freq"):
        rope = _rope_type(cm.config, mods[0], leaf)
        if rope not in ROPE_SCALING:
            return
        params, where = _rope_parameters(cm.config, leaf)
        bases = ([f'{where}["rope_theta"]'] if isinstance(params, dict) and "rope_theta" in params else []) + \
            (["config.rope_theta"] if _number(cm.config.get("rope_theta")) else [])
        head_dim = _head_dim(sizes)
        dims = []
        if head_dim is not None and isinstance(params, dict) and "partial_rotary_factor" in params:
            dims.append([f"head_dim = {head_dim}", f'dim = int(head_dim * {where}["partial_rotary_factor"])'])
        if head_dim is not None:
            dims.append([f"dim = {head_dim}"])
        rotary = sizes.solve(tuple(2 * int(m.get_buffer(leaf).shape[0]) if _has(m, leaf) else None for m in mods),
                             sizes.prefer(name.rpartition(".")[0]))
        if rotary is not None and [f"dim = {rotary.text}"] not in dims:
            dims.append([f"dim = {rotary.text}"])
        for base in bases:
            for dim in dims:
                scaling = [line.replace(ROPE, where) for line in ROPE_SCALING[rope]]
                yield [f"base = {base}", *dim, INV_FREQ, *scaling, register.format("inv_freq")]


def _checks(lines: list[str], leaf: str, config: dict, sizes: ConfigSizes, mods: list, value: torch.Tensor) -> bool:
    """The recipe gives the captured value at the exported config and Hugging Face's buffer at the probe configs (its
    shape; its values too where the module has no parameters, so Hugging Face's class is built here cheaply)."""
    got = _run(lines, leaf, config)
    if got is None or tuple(got.shape) != tuple(value.shape) or got.is_floating_point() != value.is_floating_point():
        return False
    if not torch.equal(got.to(value.dtype), value):
        return False
    for i in (1, 2):
        probe = _run(lines, leaf, {**config, **sizes.cfgs[i]})
        if probe is None or not _has(mods[i], leaf) or tuple(probe.shape) != tuple(mods[i].get_buffer(leaf).shape):
            return False
        if next(mods[0].parameters(), None) is None:
            theirs = _hf_buffer(mods[i], leaf)
            if theirs is not None and not torch.equal(probe.to(theirs.dtype), theirs):
                return False
    return True


def _run(lines: list[str], leaf: str, config: dict) -> torch.Tensor | None:
    """What the lines register as `leaf`, run with `config` as a namespace of config.json's fields."""
    registered: dict[str, torch.Tensor] = {}
    owner = types.SimpleNamespace(register_buffer=lambda n, t, persistent=True: registered.__setitem__(n, t))
    try:
        exec("\n".join(lines), {"torch": torch}, {"self": owner, "config": types.SimpleNamespace(**config)})
    except Exception:  # noqa: BLE001 - a recipe that does not run for this config is not this buffer's
        return None
    return registered.get(leaf)


def _hf_buffer(meta_module, leaf: str) -> torch.Tensor | None:
    """The buffer of Hugging Face's module class built on the CPU at the meta module's config (None: not buildable
    that way)."""
    config = getattr(meta_module, "config", None)
    if config is None:
        return None
    try:
        with torch.device("cpu"):
            return type(meta_module)(config).get_buffer(leaf)
    except Exception:  # noqa: BLE001 - a class that is not built from its config alone
        return None


def _head_dim(sizes: ConfigSizes) -> str | None:
    """Hugging Face's rotary head_dim (`config.head_dim`, else hidden // heads) as a config expression."""
    values = []
    for m in sizes.models:
        c = m.config
        try:
            values.append(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
        except (AttributeError, TypeError, ZeroDivisionError):
            return None
    found = sizes.solve(tuple(values), {"head_dim", "hidden_size", "num_attention_heads"})
    return found.text if found else None


def _rope_parameters(config: dict, leaf: str) -> tuple[dict | None, str]:
    """The rope parameters a rotary buffer is computed from and how model.py reads them: `config.rope_parameters`,
    or one layer kind's (`config.rope_parameters["sliding_attention"]` for `sliding_attention_inv_freq`)."""
    params = config.get("rope_parameters")
    kind = leaf[: -len("_inv_freq")] if leaf.endswith("_inv_freq") else ""
    if kind and isinstance(params, dict) and isinstance(params.get(kind), dict):
        return params[kind], f'{ROPE}["{kind}"]'
    return params, ROPE


def _rope_type(config: dict, module, leaf: str = "inv_freq") -> str | None:
    kind = getattr(module, "rope_type", None)
    params, _ = _rope_parameters(config, leaf)
    if isinstance(kind, dict):  # one per layer kind (OLMo 3, Gemma 3)
        kind = kind.get(leaf[: -len("_inv_freq")])
    if kind is None and isinstance(params, dict):
        kind = params.get("rope_type")
    return kind if isinstance(kind, str) else None


def _has(module, leaf: str) -> bool:
    return isinstance(getattr(module, leaf, None), torch.Tensor)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
