"""Weights vs config: the safetensors file(s) must hold exactly the tensors the config's model expects.

Every key the model expects must be in the file with the right shape, and every key in the file must be
used; otherwise one sentence names the first few offending keys and their shapes. Two places check it:
`compare_headers` reads only the safetensors headers (names, shapes) against the state dict of the model
built on the meta device, before any weight is loaded; `from_loading_info` reads what transformers'
`from_pretrained(..., output_loading_info=True)` reports, for the checkpoints transformers converts
while loading (fused or renamed tensors the header check leaves to it).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SHOWN = 3  # offending keys named per kind; the rest are counted


@dataclass
class WeightsMismatch:
    """What does not fit between a model and its weight file(s); empty when everything fits."""

    missing: dict[str, tuple] = field(default_factory=dict)  # key the model expects -> its shape
    unexpected: dict[str, tuple] = field(default_factory=dict)  # key in the file the model does not use -> its shape
    wrong_shape: dict[str, tuple[tuple, tuple]] = field(default_factory=dict)  # key -> (shape in file, shape expected)
    dtypes: object = None  # weights_values.DtypeReport: integer / bool storage of float parameters, float widths
    other_parts: dict[str, tuple] = field(default_factory=dict)  # not an error: tensors of whole submodules this class
    # does not have (bert-base-uncased's file is BertForPreTraining's: BertModel has no cls.*, BertForMaskedLM no
    # bert.pooler.* or cls.seq_relationship.*); transformers documents these as ignorable across tasks

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def only_missing(self) -> bool:
        return bool(self.missing) and not self.unexpected and not self.wrong_shape

    def sentence(self, name: str, where: Path | str) -> str:
        """One sentence: what does not fit (first few keys with shapes) and what to do."""
        parts = []
        if self.wrong_shape:
            keys = _first(self.wrong_shape)
            parts.append(f"{_count(self.wrong_shape, 'tensor has', 'tensors have')} another shape in the file than "
                         "the config gives (" + ", ".join(f"{k} {_shape(self.wrong_shape[k][0])} in the file, "
                                                          f"{_shape(self.wrong_shape[k][1])} expected" for k in keys)
                         + _more(self.wrong_shape) + ")")
        if self.missing:
            keys = _first(self.missing)
            parts.append(f"{_count(self.missing, 'tensor', 'tensors')} the model expects "
                         f"{'is' if len(self.missing) == 1 else 'are'} missing from the file ("
                         + ", ".join(f"{k} {_shape(self.missing[k])}" for k in keys) + _more(self.missing) + ")")
        if self.unexpected:
            keys = _first(self.unexpected)
            parts.append(f"{_count(self.unexpected, 'tensor', 'tensors')} in the file "
                         f"{'is' if len(self.unexpected) == 1 else 'are'} not used by the model ("
                         + ", ".join(f"{k} {_shape(self.unexpected[k])}" for k in keys) + _more(self.unexpected) + ")")
        todo = ("fix config.json (layer count, sizes, architectures) or give the weights that were saved with it")
        if self.only_missing():
            todo += ", or pass --allow-missing-weights to initialise the missing tensors randomly"
        return f"{name}: the weights in {where} do not match config.json: " + "; ".join(parts) + f"; {todo}."

    def parts_note(self, model_class: str) -> str:
        """The file's parts this class does not have, for the capture's weights note ("" when there are none)."""
        if not self.other_parts:
            return ""
        parts = sorted({k for k in self.other_parts.values()}, key=_natural)
        return f"{model_class} does not use the file's {', '.join(p + '.*' for p in parts)} (parts of another task's model)"

    def missing_note(self) -> str:
        """What --allow-missing-weights left random, for the capture's weights note."""
        keys = _first(self.missing)
        return (f"{_count(self.missing, 'tensor', 'tensors')} missing from the file initialised randomly ("
                + ", ".join(keys) + _more(self.missing) + ")")


def _natural(key: str):
    """Sort key: layer numbers in numeric order (h.2 before h.10)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def _first(d: dict) -> list[str]:
    return sorted(d, key=_natural)[:SHOWN]


def _more(d: dict) -> str:
    return f", and {len(d) - SHOWN} more" if len(d) > SHOWN else ""


def _count(d: dict, one: str, many: str) -> str:
    return f"1 {one}" if len(d) == 1 else f"{len(d)} {many}"


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


# ---- the files ---------------------------------------------------------------------------------------
def weight_files(folder: Path) -> list[Path]:
    """The safetensors files from_pretrained reads in `folder`: the shards of the index, or model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            shards = sorted(set(data["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{index} is not a valid safetensors index ({err})") from None
        if not isinstance(data.get("metadata"), dict):  # transformers reads it while loading (a KeyError otherwise)
            raise ValueError(f"{index} has no \"metadata\" object, which transformers reads")
        outside = [s for s in shards if not isinstance(s, str) or Path(s).name != s]
        if outside:
            raise ValueError(f"{index} names the shard {outside[0]!r}, which is not a file name in {folder}")
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ValueError(f"{index} lists the shard {missing[0]}, which is not in {folder}")
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_symlink() and not single.exists():
        raise ValueError(f"{single} is a link to {os.readlink(single)}, which does not exist")
    if os.path.lexists(single) and not single.is_file():
        raise ValueError(f"{single} is {_file_kind(single)}, not a weights file")
    return [single] if single.is_file() else []


def _file_kind(path: Path) -> str:
    """'a folder', 'a pipe', … for a path that exists but is no regular file."""
    import stat

    mode = path.stat().st_mode
    return ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")


def read_header(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header; raises ValueError when the file is not complete."""
    size = file.stat().st_size
    with file.open("rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        if size < 8 or header_len <= 0 or 8 + header_len > size:
            raise ValueError(f"header of {header_len} bytes does not fit in {size} bytes")
        try:
            header = json.loads(fh.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    shapes: dict[str, tuple[int, ...]] = {}
    data_end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            shapes[key] = tuple(int(s) for s in info["shape"])
            data_end = max(data_end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise ValueError(f"header entry {key!r} has no shape/data_offsets") from None
    if 8 + header_len + data_end > size:
        raise ValueError(f"file is {size} bytes, its header needs {8 + header_len + data_end}")
    return shapes


def file_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        shapes.update(read_header(f))
    return shapes


# ---- the model's side --------------------------------------------------------------------------------
def _patterns(model, attr: str) -> re.Pattern | None:
    pats = set(getattr(model, attr, None) or [])
    if attr == "_keys_to_ignore_on_load_unexpected":  # buffers older checkpoints stored (as transformers ignores them)
        names = [n for n, _ in model.named_buffers()]
        if any(n.endswith("rotary_emb.inv_freq") for n in names):
            pats.add(r"rotary_emb\.inv_freq")
        if any(n.endswith("position_ids") for n in names):
            pats.add(r"(^|\.)position_ids$")
    # anchored at a name boundary: GPT-2's "attn.bias" (the old causal-mask buffer) must not also hide "c_attn.bias"
    return re.compile("|".join(f"((^|\\.)(?:{p}))" for p in pats)) if pats else None


def _tied(model) -> set[str]:
    """Keys filled by tying (lm_head.weight = wte.weight): a file need not hold them."""
    tied = getattr(model, "all_tied_weights_keys", None)
    if tied is None:
        tied = getattr(model, "_tied_weights_keys", None) or {}
    cfg = getattr(model, "config", None)
    if cfg is not None and not getattr(cfg, "tie_word_embeddings", True):
        return set()
    return set(tied.keys() if isinstance(tied, dict) else tied)


def _renamer(model, expected: dict):
    """The checkpoint-key renaming transformers applies while loading (legacy names, base-model prefix).

    None when transformers converts tensors of this model (merges/splits them): then names and shapes in the
    file do not map one to one, and only the loading report can tell.
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # another transformers: prefix handling only
        get_model_conversion_mapping = None
    if get_model_conversion_mapping is not None:
        transforms = get_model_conversion_mapping(model)
        if any(isinstance(t, WeightConverter) for t in transforms):
            return None
        renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
        return lambda key: rename_source_key(key, renamings, [], prefix or None, expected)[0]

    def by_prefix(key: str) -> str:
        if prefix and key.startswith(prefix + ".") and key[len(prefix) + 1:] in expected:
            return key[len(prefix) + 1:]
        if prefix and f"{prefix}.{key}" in expected:
            return f"{prefix}.{key}"
        return key

    return by_prefix


def _other_part(model):
    """key (model-side name) -> the whole submodule it belongs to that this class does not have, else None.

    `bert.pooler.dense.weight` in BertForMaskedLM (no pooler) -> "bert.pooler". A layer beyond the config's count
    (`h.2.…` when h holds 2 layers) or a tensor a module of this class does not hold is no such part: None.
    """
    modules = {name for name, _ in model.named_modules()}

    def part(key: str) -> str | None:
        pieces = key.split(".")
        for i in range(len(pieces) - 1):
            path = ".".join(pieces[:i + 1])
            if path not in modules:
                return None if pieces[i].isdigit() else path
        return None

    return part


def compare_headers(model, found: dict[str, tuple[int, ...]], codes: dict[str, str] | None = None) -> WeightsMismatch | None:
    """Compare a model built on the meta device with the tensor shapes (and dtype `codes`) of its weight file(s).

    None when this model's checkpoints are converted while loading (then `from_loading_info` decides).
    """
    state = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    rename = _renamer(model, expected)
    if rename is None:
        return None
    ignore_missing = _patterns(model, "_keys_to_ignore_on_load_missing")
    ignore_unexpected = _patterns(model, "_keys_to_ignore_on_load_unexpected")
    tied = _tied(model)
    part = _other_part(model)
    out = WeightsMismatch()
    seen: set[str] = set()
    stored: dict[str, str] = {}  # model-side name -> the file's dtype code
    for key, shape in found.items():
        name = rename(key)
        if name not in expected:
            if ignore_unexpected is not None and ignore_unexpected.search(name):
                continue
            if part(name):
                out.other_parts[key] = part(name)
            else:
                out.unexpected[key] = shape
            continue
        seen.add(name)
        if codes and key in codes:
            stored[name] = codes[key]
        if tuple(shape) != expected[name]:
            out.wrong_shape[name] = (tuple(shape), expected[name])
    for name, shape in expected.items():
        if name in seen or name in tied or (ignore_missing is not None and ignore_missing.search(name)):
            continue
        out.missing[name] = shape
    from graphsurgeon.capture.weights_values import dtype_problems

    out.dtypes = dtype_problems({k: str(state[k].dtype).removeprefix("torch.") for k in stored}, stored)
    return out


def from_loading_info(model, info: dict, found: dict[str, tuple[int, ...]]) -> WeightsMismatch:
    """The mismatch transformers reported while loading (missing / unexpected / mismatched keys)."""
    state = model.state_dict()
    part = _other_part(model)
    out = WeightsMismatch()
    for key in info.get("missing_keys") or ():
        out.missing[key] = tuple(state[key].shape) if key in state else ()
    for key in info.get("unexpected_keys") or ():
        if part(key):
            out.other_parts[key] = part(key)
        else:
            out.unexpected[key] = tuple(found.get(key, ()))
    for item in info.get("mismatched_keys") or ():
        key, in_file, wanted = (list(item) + [(), ()])[:3] if isinstance(item, (tuple, list)) else (item, (), ())
        out.wrong_shape[key] = (tuple(in_file), tuple(wanted))
    return out
