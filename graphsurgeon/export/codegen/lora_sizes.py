"""A LoRA helper's sizes as config expressions (`LoRA(config.hidden_size, config.num_kv_heads * self.head_dim …)`),
as the base layers' are (config.py).

Read in the three Hugging Face models of config.py: in_features is the adapted projection's input width; the width
of a whole projection is its output width; a slice of a fused projection (a q, k or v of `query_key_value`) is a
head count of the attention times its head size — the one product of the attention's head-count and head-size
attributes that equals the slice's width here (several that agree at all three configs count as one).
"""

from __future__ import annotations

import re

from graphsurgeon.export.codegen.config import ConfigSizes

HEAD_SIZES = ("head_dim", "head_size", "attention_head_size")
LORA = re.compile(r"^(LoRA\w*)\((\d+), (\d+), (.*)\)$")


def lora_ctor(sizes: ConfigSizes, target, text: str) -> str:
    """`text` (`LoRA(64, 32, r=4, scaling=2.0)`) with its two sizes as config expressions where they are found."""
    m = LORA.match(text)
    if m is None or not sizes.active:
        return text
    cls, n_in, n_out, rest = m.groups()
    mods = sizes.modules(target.module)
    if mods is None:
        return text
    prefer = sizes.prefer(target.module.rpartition(".")[0])
    ins = tuple(_width(mod, 1) for mod in mods)
    outs = tuple(_width(mod, 0) for mod in mods) if not target.is_slice else _slice_widths(sizes, target, int(n_out))
    found_in = sizes.solve(ins, prefer) if ins[0] == int(n_in) else None
    found_out = sizes.solve(outs, prefer) if outs is not None and outs[0] == int(n_out) else None
    return f"{cls}({found_in.text if found_in else n_in}, {found_out.text if found_out else n_out}, {rest})"


def _width(module, side: int) -> int | None:
    """A projection's output (side 0) or input (side 1) width: nn.Linear's weight [out, in], Conv1D's [in, out]."""
    for names in (("out_features", "in_features"), ("nf", "nx"), ("out_channels", "in_channels")):
        value = getattr(module, names[side], None)
        if isinstance(value, int):
            return value
    w = getattr(module, "weight", None)
    return int(w.shape[side]) if w is not None and w.dim() == 2 else None


def _slice_widths(sizes: ConfigSizes, target, width: int) -> tuple | None:
    """The slice's width at the three configs: heads × head size of its attention, when one product fits."""
    owner = target.attention or target.module.rpartition(".")[0]
    mods = sizes.modules(owner)
    if mods is None:
        return None
    found = set()
    for size in HEAD_SIZES:
        for where in ("module", "config"):  # a head count of the attention, else of its config (GPT-NeoX)
            holders = [m if where == "module" else getattr(m, "config", None) for m in mods]
            for count in vars(holders[0]) if holders[0] is not None else ():
                if "head" not in count or any(w in count for w in ("dim", "size", "mask")):
                    continue
                values = tuple(_int(getattr(h, count, None)) * _int(getattr(m, size, None))
                               for h, m in zip(holders, mods))
                if values[0] == width and all(v > 0 for v in values):
                    found.add(values)
    return found.pop() if len(found) == 1 else None


def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0
