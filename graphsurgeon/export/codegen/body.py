"""The plain data a function body is made of: lines, bodies, statements, and what the writer knows of the program."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx

from graphsurgeon.export.codegen.scopes import Program, Scope


@dataclass
class Line:
    text: str
    depth: int = 0  # extra indentation (loop bodies)
    blocks: tuple = ()  # ids of the canvas blocks the line writes ("m:<path>", "n:<fx node>")
    optional: str | None = None  # LoRA module (attribute path): a line only the layers with that LoRA have
    anchor: int = 0  # statements without `optional` written before it (where merged classes put it)
    comment: str = ""  # the shape comment (kept apart: layers of one class may differ in sizes)

    @property
    def full(self) -> str:
        return f"{self.text}  # {self.comment}" if self.comment else self.text


@dataclass
class Body:
    params: list[str]  # parameter names after self
    lines: list[Line]
    returns: list[str]  # returned expressions, in output order
    training: bool = False  # a function that needs `training` (it has a dropout)
    sizes: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)  # a function's parameters its module fills (`scaling`)


@dataclass
class Stmt:
    values: list  # values it defines (None for a tuple slot nobody reads)
    node: torch.fx.Node | None = None  # an op
    scope: Scope | None = None  # a child scope it calls
    loop: list | None = None  # alike layers called in a for loop
    kinds: tuple | None = None  # a loop of layers of several kinds: (config list, {input position: {kind: value}})
    classes: tuple | None = None  # a loop of layers of several classes: (config list, {kind: a layer of its class})
    line: str | None = None  # source position (values on the same line fold into one statement)
    optional: str | None = None
    lora_onto: torch.fx.Node | None = None  # a LoRA add: the value it adds onto (keeps its name)


class Env:
    """What a writer needs to know about the rest of the program (set by classes.py)."""

    def __init__(self, prog: Program, lists: set[str]) -> None:
        self.prog, self.lists = prog, lists
        self.class_names: dict[str, str] = {}  # scope key -> class name
        self.function_names: dict[str, str] = {}  # scope key -> function name
        self.training: dict[str, bool] = {}  # function scope key -> needs `training`
        self.leaves: dict[str, object] = {}  # scope key -> Leaf
        self.kv: dict = {}  # module scope key -> (key, value) its attention reads: a KV cache goes in before
        self.config = None  # ConfigSizes: numbers as expressions of the config (set by classes.py)
        self.extras: dict[str, list] = {}  # function scope key -> [(parameter, value)] its callers pass (sizes.py)
        self.masks: dict = {}  # mask value read only by SDPA -> its form ("causal mask"): None when nothing is padded
        self.looped: set[str] = set()  # ModuleLists a loop runs whole (their length may come from the config)
        self.layer_classes: dict[str, tuple] = {}  # a looped ModuleList of several classes -> Stmt.classes

    def attr(self, base: str, path: str) -> str:
        """`self.h[0].attn` for module `path` seen from a class at `base`."""
        rel = path[len(base) + 1:] if base else path
        out, seen = "self", base
        for part in rel.split("."):
            out += f"[{part}]" if seen in self.lists and part.isdigit() else f".{part}"
            seen = f"{seen}.{part}" if seen else part
        return out


def scope_depth(scope: Scope) -> int:
    d, s = 0, scope
    while s is not None:
        d += s.kind == "module"
        s = s.parent
    return d


def module_of(scope: Scope) -> Scope:
    while scope.kind not in ("module", "root"):
        scope = scope.parent
    return scope
