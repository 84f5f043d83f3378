"""Diagnostic: one problem found in the graph, naming the node, the expected and the found shape/dtype."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from graphsurgeon.errors import GraphsurgeonError


@dataclass(frozen=True)
class Diagnostic:
    """One validation finding."""

    node: str  # fx node name it is about ("" for the whole graph)
    message: str  # one sentence: what is wrong and what to do
    expected: str = ""  # expected shape/dtype/value, as text
    found: str = ""  # what the graph has, as text
    severity: str = "error"  # "error" refuses an edit / fails validation; "warning" informs

    def __str__(self) -> str:
        extra = f" (expected {self.expected}, found {self.found})" if self.expected or self.found else ""
        return f"{self.node}: {self.message}{extra}" if self.node else f"{self.message}{extra}"

    def as_dict(self) -> dict:
        return asdict(self)


class ValidationError(GraphsurgeonError):
    """An edit was refused; `.diagnostics` says why. The graph is unchanged."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("; ".join(str(d) for d in self.diagnostics))
