"""TensorMeta: shape, dtype and rank of one value, with dynamic dims shown by name.

TensorMeta is plain data (a view snapshot is read back without torch, so the editor can paint it before torch is
imported); torch is imported only by the functions that read a live graph's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DimNames:
    """Maps torch.export's symbols (s70, s72) to the user's dim names and example sizes."""

    names: dict[str, str] = field(default_factory=dict)  # symbol -> "batch" / "seq"
    examples: dict[str, int] = field(default_factory=dict)  # dim name -> example size (batch 2, seq 10)
    bounds: dict[str, int | None] = field(default_factory=dict)  # dim name -> the max torch.export was given (None: open)
    static: dict[str, int] = field(default_factory=dict)  # dims the model's code fixes, captured at this size
    lows: dict[str, int] = field(default_factory=dict)  # dim name -> the min torch.export was given
    retries: list[str] = field(default_factory=list)  # how capture changed a range torch.export refused (notes)
    multiples: dict[str, int] = field(default_factory=dict)  # dim name -> m: captured as a multiple of m

    def text(self, dim) -> str:
        """A dim as text: 768, batch, batch*seq."""
        if isinstance(dim, int):
            return str(dim)
        import torch

        expr = dim.node.expr if isinstance(dim, torch.SymInt) else dim
        if not getattr(expr, "free_symbols", None):
            return str(int(expr))
        import sympy

        memo = self._memo("text")
        if expr not in memo:  # an 80-layer graph has thousands of values but a few dozen distinct dims
            subs = {s: sympy.Symbol(self.names.get(str(s), str(s))) for s in expr.free_symbols}
            memo[expr] = str(expr.xreplace(subs)).replace(" ", "")
        return memo[expr]

    def example(self, dim) -> int:
        """A dim at the example sizes (batch 2, seq 10 by default)."""
        if isinstance(dim, int):
            return dim
        import torch

        expr = dim.node.expr if isinstance(dim, torch.SymInt) else dim
        if not getattr(expr, "free_symbols", None):
            return int(expr)
        memo = self._memo("example")
        if expr not in memo:
            subs = {s: self.examples.get(self.names.get(str(s), str(s)), 1) for s in expr.free_symbols}
            memo[expr] = int(expr.subs(subs))
        return memo[expr]

    def _memo(self, kind: str) -> dict:
        """Dims already read, per kind; forgotten when a name or an example size changes (not a dataclass field:
        equality and copies ignore it)."""
        key = (kind, tuple(self.names.items()), tuple(self.examples.items()))
        memos = self.__dict__.setdefault("_memos", {})
        if key not in memos:
            if len(memos) > 8:
                memos.clear()
            memos[key] = {}
        return memos[key]


@dataclass(frozen=True)
class TensorMeta:
    """What a link carries: shape (symbolic text per dim), example shape, dtype and rank."""

    shape: tuple[str, ...]  # one text per dim: ("batch", "seq", "768")
    example_shape: tuple[int, ...]  # the same dims at the example sizes: (2, 10, 768)
    dtype: str  # torch dtype without the prefix: "float32", "int64", "bool"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def kind(self) -> str:
        """'int', 'float', 'bool' or 'complex': what the link colour shows."""
        if self.dtype == "bool":
            return "bool"
        if self.dtype.startswith(("float", "bfloat")):
            return "float"
        if self.dtype.startswith("complex"):
            return "complex"
        return "int"

    @property
    def shape_text(self) -> str:
        return "[" + ", ".join(self.shape) + "]"

    @property
    def example_text(self) -> str:
        return "[" + ", ".join(str(d) for d in self.example_shape) + "]"

    def as_dict(self) -> dict:
        return {"shape": list(self.shape), "example_shape": list(self.example_shape), "dtype": self.dtype}


def dtype_name(dtype) -> str:
    """torch.float32 -> "float32"."""
    return str(dtype).removeprefix("torch.")


def tensor_meta(val, dims: DimNames) -> TensorMeta | None:
    """TensorMeta of a node's meta["val"]: a (fake) tensor, a SymInt or a plain number; else None."""
    import torch

    if isinstance(val, torch.Tensor):
        return TensorMeta(
            shape=tuple(dims.text(d) for d in val.shape),
            example_shape=tuple(dims.example(d) for d in val.shape),
            dtype=dtype_name(val.dtype),
        )
    if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
        return TensorMeta(shape=(), example_shape=(), dtype="int64")
    if isinstance(val, (torch.SymFloat, float)):
        return TensorMeta(shape=(), example_shape=(), dtype="float32")
    if isinstance(val, (torch.SymBool, bool)):
        return TensorMeta(shape=(), example_shape=(), dtype="bool")
    return None
