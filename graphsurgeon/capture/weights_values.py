"""Weights checked by kind and by value: the dtypes a safetensors header declares, and non-finite values.

- `header_dtypes(files)`: tensor name -> the header's dtype ("F32", "BOOL", …), read without loading a tensor.
- `dtype_problems(expected, found)`: a floating-point tensor of the model stored as an integer or bool type is wrong
  (transformers casts it without a word: a bool matrix becomes 0/1 weights); another float width (F16 for a float32
  model) is only noted, transformers converts it while loading.
- `nonfinite(named_tensors)`: a streamed scan, one sum per tensor (no extra memory), for NaN / inf; run on the
  loaded model (capture/sources.py), it is the first read of the bytes the load mapped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

NONFINITE_NOTE = "WEIGHTS HOLD NaN OR inf"  # in the weights note of a model loaded with --allow-nonfinite
SHOWN = 3

FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
TORCH_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3",
               "float8_e5m2": "F8_E5M2", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
               "bool": "BOOL"}
NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
         "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}


def dtype_name(code: str) -> str:
    """The torch name of a safetensors dtype code ("F16" -> "float16")."""
    return NAMES.get(code, code.lower())


def header_dtypes(files: list[Path]) -> dict[str, str]:
    """Tensor name -> safetensors dtype code, from the headers of `files` (the tensors are not read)."""
    out: dict[str, str] = {}
    for f in files:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            try:
                header = json.loads(fh.read(n))
            except ValueError:
                continue  # read_header has refused such a file already
        if isinstance(header, dict):
            out.update({k: str(v.get("dtype")) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)})
    return out


@dataclass
class DtypeReport:
    wrong: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (dtype in the file, the model's dtype)
    converted: dict[str, tuple[str, str]] = field(default_factory=dict)  # another float width, converted on load

    def sentence(self, name: str, where) -> str:
        keys = sorted(self.wrong)[:SHOWN]
        listed = ", ".join(f"{k} is {self.wrong[k][0]} in the file, the model's parameter is {self.wrong[k][1]}"
                           for k in keys)
        more = f", and {len(self.wrong) - SHOWN} more" if len(self.wrong) > SHOWN else ""
        return (f"{name}: the weights in {where} store floating-point parameters as integers or booleans ({listed}"
                f"{more}), which would load as whole numbers, not weights; give the file the model's float weights.")

    def note(self) -> str:
        """'' or the note said with the weights: another float width, converted while loading."""
        if not self.converted:
            return ""
        pairs = sorted({v for v in self.converted.values()})
        how = ", ".join(f"{a} in the file, {b} in the model" for a, b in pairs)
        return f"{len(self.converted)} tensor{'s' if len(self.converted) > 1 else ''} converted while loading ({how})"


def dtype_problems(expected: dict[str, str], found: dict[str, str]) -> DtypeReport:
    """Compare the model's dtypes (`expected`: key -> torch name) with the file's codes (`found`, same keys)."""
    out = DtypeReport()
    for key, want in expected.items():
        code = found.get(key)
        if code is None or TORCH_CODES.get(want) == code:
            continue
        if TORCH_CODES.get(want) not in FLOAT_CODES:
            continue  # an integer buffer (position_ids): transformers' own business
        if code in FLOAT_CODES:
            out.converted[key] = (dtype_name(code), want)
        else:
            out.wrong[key] = (dtype_name(code), want)
    return out


def nonfinite(named_tensors) -> dict[str, tuple[int, int]]:
    """Tensor name -> (NaN count, inf count) for every floating-point tensor holding either.

    A streamed scan: one sum per tensor (NaN and inf propagate through it; no mask is allocated, about 30× faster
    than isfinite on CPU, and as fast as a plain read of the bytes: benchmarks/weights_scan.py); only a tensor whose
    sum is not finite (NaN, inf, or finite values overflowing) is counted.
    One thread: a sum is bound by memory, and on a busy machine the thread pool's wake-ups cost 4× the arithmetic
    (benchmarks/weights_scan.py).
    """
    import torch

    bad: dict[str, tuple[int, int]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, t in named_tensors:
            if not t.is_floating_point() or t.device.type == "meta":
                continue
            if bool(torch.isfinite(t.detach().sum(dtype=torch.float32))):  # a float16 tensor's sum cannot overflow
                continue
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            if nan or inf:  # else: large finite values whose sum overflowed
                bad[name] = (nan, inf)
    finally:
        torch.set_num_threads(threads)
    return bad


def nonfinite_text(bad: dict[str, tuple[int, int]]) -> str:
    """'h.0.attn.c_attn.weight holds 2 NaN, lm_head.weight holds 1 inf, and 3 more tensors'."""
    parts = []
    for k in sorted(bad)[:SHOWN]:
        nan, inf = bad[k]
        parts.append(f"{k} holds " + " and ".join(t for t in (nan and f"{nan} NaN", inf and f"{inf} inf") if t))
    more = f", and {len(bad) - SHOWN} more tensor{'s' if len(bad) - SHOWN > 1 else ''}" if len(bad) > SHOWN else ""
    return ", ".join(parts) + more
