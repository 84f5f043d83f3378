"""The data every LoRA edit is described by: targets, hyper-parameters, and inserted blocks.

This is the contract between surgery (which creates these), export (which reads them from
`CapturedModel.loras`) and the editor. Plain data: everything here saves to JSON.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields

from graphsurgeon.errors import GraphsurgeonError


@dataclass(frozen=True)
class Target:
    """A tensor LoRA can adapt: a projection's output (or one slice of a fused one) and the x it reads."""

    layer: int | None  # index of the repeated block it sits in (h.3 -> 3), None outside repeated blocks
    role: str  # "q", "k", "v", or another name for explicitly chosen projections ("o", "fc1", …)
    module: str  # module path of the projection: "encoder.layer.0.attention.self.query", "transformer.h.0.attn.c_attn"
    kind: str  # "linear" (weight [out, in]), "conv1d" (GPT-2's Conv1D, [in, out]), "conv1x1" (nn.Conv1d, [out, in, 1])
    target_node: str  # fx node name of the tensor to adapt (projection output or the q/k/v slice)
    input_node: str  # fx node name of x, the tensor the projection reads
    in_features: int
    out_features: int  # width of the LoRA output: len(columns) for part of a fused projection
    columns: tuple[int, ...] | None = None  # the projection's output columns it adapts, in order; None = all (whole module)
    attention: str | None = None  # module path of the attention composite that consumes it
    layout: tuple[int, ...] | None = None  # target's dims in the order that lays [tokens, out] out (None: a reshape)

    def __post_init__(self) -> None:  # JSON gives lists; the target stays hashable and compares equal
        for name in ("columns", "layout"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(int(v) for v in value))

    @property
    def is_slice(self) -> bool:
        return self.columns is not None

    @property
    def column_kind(self) -> str:
        """How the target sits in its projection: "whole", "contiguous slice" or "interleaved set"."""
        if self.columns is None:
            return "whole"
        cols = self.columns
        return "contiguous slice" if list(cols) == list(range(cols[0], cols[0] + len(cols))) else "interleaved set"

    @property
    def column_text(self) -> str:
        """The columns as people write them: "" (whole), "[64:128]", or "{0:16, 48:64, …} (64 of 192)"."""
        if self.columns is None:
            return ""
        runs = column_runs(self.columns)
        if len(runs) == 1:
            return f"[{runs[0][0]}:{runs[0][1]}]"
        shown = ", ".join(f"{a}:{b}" for a, b in runs[:4]) + (", …" if len(runs) > 4 else "")
        return f"{{{shown}}} ({len(self.columns)} columns)"

    def as_dict(self) -> dict:
        return asdict(self)


def column_runs(columns) -> list[tuple[int, int]]:
    """Consecutive ascending runs of a column list as (start, stop) pairs: (0..15, 48..63) -> [(0, 16), (48, 64)]."""
    runs: list[tuple[int, int]] = []
    for c in columns:
        if runs and c == runs[-1][1]:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


INITS = ("kaiming", "gaussian")  # A's initialisation; B starts at zero either way
ALLOWED = {  # LoRAConfig field -> its allowed values, as every error message states them
    "r": "r must be a whole number of at least 1 (e.g. 8)",
    "alpha": "alpha must be a finite number greater than 0 (e.g. 16)",
    "dropout": "dropout must be a probability p with 0 <= p < 1 (e.g. 0.05)",
    "use_rslora": "use_rslora must be true or false",
    "init": f"init must be one of {', '.join(INITS)}",
}


class LoRAConfigError(GraphsurgeonError, ValueError):
    """A LoRA hyper-parameter out of its allowed values; `.field`, `.value`, `.allowed` let callers name their own flag."""

    def __init__(self, field_name: str, value, allowed: str, message: str | None = None) -> None:
        self.field, self.value, self.allowed = field_name, value, allowed
        super().__init__(message or f"{field_name} = {_show(value)} is not allowed: {allowed}.")


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class LoRAConfig:
    """Hyper-parameters of one LoRA block, validated here and only here (like PEFT's LoraConfig.__post_init__).

    The one bound that depends on the target, r ≤ min(in, out), is checked when the block is inserted
    (validate/local.py).
    """

    r: int = 8  # rank of the update B·A
    alpha: float = 16.0  # scaling = alpha / r (alpha / sqrt(r) with rslora)
    dropout: float = 0.0  # dropout on the LoRA branch only
    use_rslora: bool = False  # rank-stabilised scaling
    init: str = "kaiming"  # "kaiming" (PEFT's default: A kaiming-uniform a=sqrt(5), B zeros) or "gaussian"

    def __post_init__(self) -> None:
        if not isinstance(self.r, numbers.Integral) or isinstance(self.r, bool) or self.r < 1:
            raise LoRAConfigError("r", self.r, ALLOWED["r"])
        if not _is_number(self.alpha) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise LoRAConfigError("alpha", self.alpha, ALLOWED["alpha"])
        if not _is_number(self.dropout) or not math.isfinite(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise LoRAConfigError("dropout", self.dropout, ALLOWED["dropout"])
        if not isinstance(self.use_rslora, bool):
            raise LoRAConfigError("use_rslora", self.use_rslora, ALLOWED["use_rslora"])
        if not isinstance(self.init, str) or self.init not in INITS:
            raise LoRAConfigError("init", self.init, ALLOWED["init"])
        object.__setattr__(self, "r", int(self.r))  # plain Python numbers, so they save to JSON as they read
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))

    @classmethod
    def from_dict(cls, data) -> "LoRAConfig":
        """A config from JSON data (a recipe step): every field present, no unknown key, values as in __post_init__."""
        names = [f.name for f in fields(cls)]
        keys = ", ".join(names)
        if not isinstance(data, dict):
            raise LoRAConfigError("config", data, keys, f"config must be an object with the keys {keys}, "
                                                         f"not {type(data).__name__} {_show(data)}.")
        unknown = [k for k in data if k not in names]
        if unknown:
            raise LoRAConfigError("config", unknown[0], keys, f"config key {unknown[0]!r} is unknown; the keys are {keys}.")
        missing = [k for k in names if k not in data]
        if missing:
            raise LoRAConfigError("config", missing[0], keys, f"config lacks {missing[0]!r}; give every key: {keys}.")
        return cls(**data)

    @property
    def scaling(self) -> float:
        return self.alpha / (self.r ** 0.5) if self.use_rslora else self.alpha / self.r

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoRABlock:
    """One inserted block: an "Add LoRA Layer" (kind "add") or a bare "LoRA Layer" the user wires (kind "bare")."""

    path: str  # composite path of the block, e.g. "transformer.h.0.attn.lora_q"
    target: Target
    config: LoRAConfig
    module_path: str  # gm submodule holding lora_A / lora_B (nn.Linear, bias=False): f"{path}.lora" ("add"), path ("bare")
    nodes: list[str] = field(default_factory=list)  # fx node names of the block, in order (the add included for "add")
    add_node: str = ""  # the fx node that adds the LoRA output onto the target ("" for an unconnected bare block)
    kind: str = "add"  # "add": LoRA + the add onto its target; "bare": the branch alone, wired by the user
    wired_to: str | None = None  # for a connected bare block: the fx node its output is added onto

    @property
    def onto(self) -> str | None:
        """The fx node the LoRA output is added onto (None: not connected)."""
        return self.target.target_node if self.kind == "add" else self.wired_to

    @property
    def mergeable(self) -> bool:
        """True when the block is exactly ΔW = B·A·scaling on its projection (it adds onto its own target)."""
        return self.onto == self.target.target_node

    def as_dict(self) -> dict:
        return {"path": self.path, "target": self.target.as_dict(), "config": self.config.as_dict(),
                "module_path": self.module_path, "nodes": list(self.nodes), "add_node": self.add_node,
                "kind": self.kind, "wired_to": self.wired_to, "mergeable": self.mergeable}
