"""The plain data of a block view: blocks, ports, links, static inputs and shape-table rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphsurgeon.errors import ViewError
from graphsurgeon.graph.meta import TensorMeta


@dataclass
class StaticInput:
    """An input given in place (weight, buffer, constant scalar, size): drawn as a circle."""

    name: str  # argument name, e.g. "weight", "p", "dim"
    text: str  # what the circle says: "[768, 2304]", "0.1", "batch"
    source: str | None = None  # the parameter/buffer name when there is one


@dataclass
class Port:
    """An input or output of a block, carrying one value."""

    id: str
    name: str  # display name of the value carried ("query_states", "attn_output"), as the source names it: a
    # name the source rebinds is carried by each value it is bound to, told apart by shape, position and `step`
    value: str  # the fx node name of the value carried (ids, tooltips, lookups)
    meta: TensorMeta | None
    label: str = ""  # for a primitive's input: what the argument means ("input", "weight", "mask", "residual")
    step: str = ""  # for a rebound name: which binding ("query_states, 2 of 2: query_states = query_states.view(…)")


@dataclass
class Block:
    """A node of a view: a composite (a module), a primitive (an fx op) or a boundary."""

    id: str
    kind: str  # "composite", "primitive", "input" (view inputs), "output" (view outputs)
    title: str  # attribute name ("attn"), stack ("h.0 … h.11 ×12"), function group ("Causal mask") or op ("addmm")
    subtitle: str  # class name ("GPT2Attention", "GELU (tanh)"), function ("create_causal_mask()") or op ("Tensor.view")
    inputs: list[Port] = field(default_factory=list)
    outputs: list[Port] = field(default_factory=list)
    static_inputs: list[StaticInput] = field(default_factory=list)
    module_path: str | None = None  # the module path (composites) or the module the op ran in
    param_count: int = 0  # parameters of the composite (each shared tensor once)
    node: str | None = None  # the fx node name (primitives)
    role: str | None = None  # what it is for: "attention", "mlp", "norm", "q_proj", "rotary", "causal_mask", "lora", …
    group: str | None = None  # composites: "module", "function" (a function group) or "stack" (alike layers)


@dataclass
class Link:
    """A value flowing from one block's output port to another block's input port."""

    id: str
    src: str  # port id
    dst: str  # port id
    value: str  # fx node name of the value
    meta: TensorMeta | None
    name: str = ""  # display name of the value
    step: str = ""  # which binding of a rebound name (Port.step)


@dataclass
class VariableRow:
    """A row of the shape table: a value carrying data in the view."""

    name: str  # display name ("query_states"), as on the canvas (a rebound name on several rows)
    producer: str  # the op or block that produces it ("input" for a view input)
    shape: str  # "[batch, seq, 768]"
    example_shape: str  # "[2, 10, 768]"
    dtype: str
    port: str  # id of the port it leaves from
    value: str = ""  # the fx node name (for tooltips, --deep and JSON)
    step: str = ""  # which binding of a rebound name (Port.step)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CompositeView:
    """One level of the hierarchy: the blocks, links and variables inside a composite."""

    path: str
    class_name: str
    blocks: list[Block]
    links: list[Link]
    variables: list[VariableRow]

    def block(self, block_id: str) -> Block:
        for b in self.blocks:
            if b.id == block_id:
                return b
        raise ViewError(f"no block {block_id!r} in the view of {self.path or '(root)'}")

    def find(self, title: str) -> Block:
        """The block with this title (attribute or op name), e.g. view.find('c_attn')."""
        for b in self.blocks:
            if b.title == title:
                return b
        raise ViewError(f"no block titled {title!r} in the view of {self.path or '(root)'}; "
                        f"there are: {', '.join(sorted(b.title for b in self.blocks))}")
