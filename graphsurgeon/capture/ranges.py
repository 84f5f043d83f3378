"""The ranges of the dynamic dims torch.export is given, and how a refused range is retried.

torch.export refuses a range when the model's code guards a dim (`if seq > max_positions: raise`, a causal buffer
sliced with `[:key_length]`, a table read at a fixed size) and says which range would do ("Suggested fixes:
seq = Dim('seq', min=4, max=64)", or "seq = 10" when the code fixes the size). `Ranges` holds the range of each
dim name, applies a suggestion once, and says in one line what changed and why (a capture note).
"""

from __future__ import annotations

import re

BATCH_MAX = 4096
_DIM_FIX = re.compile(r"^\s*(\w+) = Dim\('(\w+)'((?:,\s*\w+=\d+)*)\)\s*$", re.M)
_STATIC_FIX = re.compile(r"^\s*(\w+) = (\d+)\s*$", re.M)


class Ranges:
    """name -> [min, max] (max None: open) for every dim name of `dynamic`; sequence dims bounded by `max_seq`."""

    def __init__(self, dynamic: dict[str, dict[int, str]], max_seq: int | None) -> None:
        self.first: dict[str, tuple[int, int | None]] = {}
        for axes in dynamic.values():
            for name in axes.values():
                hi = max_seq if "seq" in name else BATCH_MAX
                self.first.setdefault(name, (1 if name == "batch" else 2, hi))
        self.now = dict(self.first)
        self.why: dict[str, str] = {}  # dim -> how its range was chosen, for the note
        self.tried: set[tuple] = {self._key()}
        self.scale: dict[str, int] = {}  # dim -> m for dims captured as m × `_dim` (torch.export suggests `_dim`'s range)

    def _key(self) -> tuple:
        return tuple(sorted(self.now.items(), key=lambda kv: kv[0]))

    def suggest(self, message: str) -> bool:
        """Take the ranges torch.export suggests in `message`; False when it suggests none, or one already tried."""
        fixes = suggested_ranges(message)
        new = dict(self.now)
        for name, (lo, hi) in fixes.items():
            if name not in new and name[1:] in self.scale:  # the range of `_seq` in seq = 4*_seq
                m, name = self.scale[name[1:]], name[1:]
                lo, hi = lo * m if lo is not None else None, hi * m if hi is not None else None
            if name not in new:
                continue
            old_lo, old_hi = new[name]
            new[name] = (max(old_lo, lo) if lo is not None else old_lo, hi if hi is not None else old_hi)
        return self._move(new, "the range torch.export suggested")

    def widen_seq(self, hi: int | None) -> bool:
        """Bound the sequence dims at `hi` (None: no maximum) when torch.export suggested nothing usable."""
        new = {n: ((r[0], hi) if "seq" in n else r) for n, r in self.now.items()}
        return self._move(new, "the next bound tried (torch.export suggested none)")

    def _move(self, new: dict, why: str) -> bool:
        before = dict(self.now)
        self.now = new
        if self._key() in self.tried:
            self.now = before
            return False
        self.tried.add(self._key())
        for name in new:
            if new[name] != before[name]:
                self.why[name] = why
        return True

    def reset(self) -> None:
        """Back to the first ranges, none tried yet (for attempts of another kind)."""
        self.now, self.why = dict(self.first), {}
        self.tried = {self._key()}

    def notes(self) -> list[str]:
        """One line per dim whose range differs from the first one tried (what was refused, what was used, why)."""
        lines = []
        for name, (lo, hi) in self.now.items():
            if (lo, hi) == self.first[name]:
                continue
            first_lo, first_hi = self.first[name]
            limit = " (the model's position limit)" if "seq" in name and first_hi is not None else ""
            lines.append(f"torch.export refused {_text(name, first_lo, first_hi)}{limit}; captured with "
                         f"{_text(name, lo, hi)}, {self.why.get(name, 'the range torch.export suggested')}")
        return lines


def _text(name: str, lo: int, hi: int | None) -> str:
    """`seq ≤ 64`, `4 ≤ seq ≤ 64`, `seq ≥ 4`, `any seq` (the default minimum, 1 or 2, is not said)."""
    low = lo > (1 if name == "batch" else 2)
    if hi is None:
        return f"{name} ≥ {lo}" if low else f"any {name}"
    return f"{lo} ≤ {name} ≤ {hi}" if low else f"{name} ≤ {hi}"


def suggested_ranges(message: str) -> dict[str, tuple[int | None, int | None]]:
    """{dim name: (min, max)} from torch.export's "Suggested fixes" (None where it names no bound)."""
    out = {}
    for _, name, args in _DIM_FIX.findall(message):
        bounds = dict(re.findall(r"(\w+)=(\d+)", args))
        out[name] = (int(bounds["min"]) if "min" in bounds else None, int(bounds["max"]) if "max" in bounds else None)
    return out


def specialized(message: str, dynamic: dict) -> dict[str, int]:
    """Dims torch.export says the code fixes to a constant ("Suggested fixes: seq = 10"): removed from `dynamic`."""
    fixed = {}
    for dim_name, value in _STATIC_FIX.findall(message):
        for axes in dynamic.values():
            for axis, n in list(axes.items()):
                if n == dim_name:
                    del axes[axis]
                    fixed[dim_name] = int(value)
    return fixed


def unproven_guard(message: str, ranges: dict | None = None) -> str:
    """The guard torch.export reports it could not prove ("satisfy the generated guard …"), dims by name; with
    `ranges` (the ranges tried), the first guard that is not a plain range of them."""
    guards = [g.strip().rstrip(".") for g in re.findall(r"satisfy the generated guard (.+)", message)]
    plain = re.compile(r"^[\d\s<=]*L\['\w+'\]\.size\(\)\[\d\]( <= \d+)?$|^\d+ <= L\['\w+'\]\.size\(\)\[\d\] and "
                       r"L\['\w+'\]\.size\(\)\[\d\] <= \d+$")
    if ranges is not None:
        guards = [g for g in guards if not plain.match(g)] or guards
    guard = guards[0] if guards else "on the batch and sequence sizes"
    return re.sub(r"L\['(\w+)'\]\.size\(\)\[(\d)\]", r"\1.shape[\2]", guard)[:160]


_GUARD_OF = re.compile(r"values of (\w+) = L\['\w+'\]\.size\(\)\[\d\] in the specified range .*? satisfy the "
                       r"generated guard (.+)")


def divisor_guard(message: str, names: set[str]) -> tuple[str, int, str] | None:
    """(dim name, m, the guard) for a guard on whether a dim is a multiple of m — `seq != 4*(seq // 4)`, as code that
    cuts a sequence into windows of m tokens writes it (DeepSeek-V4's compressors slice `[:(seq // 4) * 4]`). No range
    can prove it; capturing the dim as m × another dim can. None when the message has no such guard."""
    for name, guard in _GUARD_OF.findall(message):
        floors = {int(m) for m in re.findall(r"\d+\*\(L\['\w+'\]\.size\(\)\[\d\] // (\d+)\)", guard)}
        if name in names and len(floors) == 1 and (m := floors.pop()) > 1:  # k*(seq // m): a multiple of m
            return name, m, re.sub(r"L\['\w+'\]\.size\(\)\[\d\]", name, guard.strip().rstrip("."))[:160]
    return None
