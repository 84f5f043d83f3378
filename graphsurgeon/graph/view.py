"""The block view: composites from nn_module_stack, primitives from fx nodes, ports and links.

Derived from the GraphModule, never edited directly. `BlockGraph` indexes the graph once
(which composite each node belongs to); `BlockGraph.view(path)` derives one composite level
on demand, so opening a view costs only the nodes inside it.

Ids are stable text: a composite is ``m:<module path>`` (root ``m:``), a primitive
``n:<fx node name>``; a view's own boundary blocks are ``m:<path>#in`` and ``m:<path>#out``;
a port is ``<block id>/in/<name>`` or ``<block id>/out/<name>``.
"""

from __future__ import annotations

import operator
import torch
import torch.fx

from graphsurgeon.errors import ViewError
from graphsurgeon.graph.blocks import Block, CompositeView, Link, Port, StaticInput, VariableRow
from graphsurgeon.graph.hierarchy import Hierarchy
from graphsurgeon.graph.meta import TensorMeta, tensor_meta
from graphsurgeon.graph.semantics import activation_title, rebound_steps

__all__ = ["Block", "BlockGraph", "CompositeView", "Link", "Port", "StaticInput", "VariableRow",
           "composite_id", "op_name", "primitive_id"]

HIDDEN_TARGETS = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size", "_guards_fn"}
_CHAIN_MEMO = "_graphsurgeon_chain"  # node.meta key: (nn_module_stack read, composite chain, (path, class) pairs)
_META_MEMO = "_graphsurgeon_tensor_meta"  # node.meta key: (meta["val"] read, DimNames, TensorMeta)


def composite_id(path: str) -> str:
    return f"m:{path}"


def primitive_id(node_name: str) -> str:
    return f"n:{node_name}"


def op_name(node: torch.fx.Node) -> str:
    """A readable op name: 'addmm', 'scaled_dot_product_attention', 'getitem'."""
    t = node.target
    if isinstance(t, str):
        return t
    packet = getattr(t, "_overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(t, "__name__", str(t))


_INDEXING = {"slice", "select", "index", "getitem"}  # written x[...]


def pytorch_name(node: torch.fx.Node) -> str:
    """An op in PyTorch's spelling, the subtitle of its block: the public callable that is the op itself —
    `F.scaled_dot_product_attention`, `torch.transpose`, `Tensor.view`, `Tensor.split` (torch.split is Python sugar
    over the method), `Tensor.__getitem__` for indexing; `aten.<op>.<overload>` only where PyTorch has none."""
    import types

    name = op_name(node)
    if name == "sym_size":
        return "Tensor.size"
    if node.op != "call_function" or name.startswith("_"):
        dunder = name.startswith("__") and name.endswith("__") and hasattr(torch.Tensor, name)
        return f"Tensor.{name}" if node.op == "call_function" and dunder else str(node.target)
    if name in _INDEXING:
        return "Tensor.__getitem__"
    if callable(getattr(torch.nn.functional, name, None)):
        return f"F.{name}"
    if isinstance(getattr(torch, name, None), types.BuiltinFunctionType):
        return f"torch.{name}"
    if callable(getattr(torch.Tensor, name, None)):
        return f"Tensor.{name}"
    if callable(getattr(torch, name, None)):
        return f"torch.{name}"
    return str(node.target)


def _arg_names(node: torch.fx.Node) -> list[str]:
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        return [a.name for a in schema.arguments]
    return []


class BlockGraph:
    """Index of a captured graph: the composite tree, and each node's composite chain."""

    def __init__(self, captured) -> None:
        self.captured = captured
        gm = captured.gm
        self.dims = captured.dims
        self.tree = Hierarchy(captured.model_class)
        self.chain: dict[torch.fx.Node, tuple[str, ...]] = {}  # composite paths from the root's child down
        self.static: dict[torch.fx.Node, str] = {}  # node -> circle text
        self.hidden: set[torch.fx.Node] = set()
        self.folded: dict[torch.fx.Node, tuple[torch.fx.Node, int]] = {}  # getitem -> (tuple producer, index)
        self.nodes: dict[str, torch.fx.Node] = {}
        self.output_node: torch.fx.Node | None = None
        self.placeholders: list[torch.fx.Node] = []  # graph inputs: the root view's inputs
        self._chains: dict[int, tuple] = {}  # id(nn_module_stack) -> (it, chain, classes): one read per stack
        self._members: dict[tuple[int, str], list[torch.fx.Node]] | None = None  # (depth - 1, path) -> its nodes
        for node in gm.graph.nodes:
            self.nodes[node.name] = node
            self._classify(node)
        self.sem = captured.semantics()
        self.hidden |= self.sem.hidden
        self.tree.nest(self.chain, self.sem)
        for node, (src, _) in self.folded.items():
            self.chain[node] = self.chain.get(src, ())
        for node in gm.graph.nodes:
            if node in self.chain and node not in self.hidden:
                self.tree.add_chain(self.chain[node])
        by_module: dict[str, list] = {}  # innermost module -> its nodes
        for n, c in self.chain.items():
            if c:
                by_module.setdefault(c[-1], []).append(n)
        for path in self.tree.classes:
            if path and path not in self.tree.kinds and self.sem.module_role(path) == "activation":
                title = activation_title(by_module.get(path, []))
                if title:
                    self.tree.subtitles[path] = title
        self._param_counts = self._count_parameters()

    @property
    def classes(self) -> dict[str, str]:
        return self.tree.classes

    @property
    def children(self) -> dict[str, list[str]]:
        return self.tree.children

    # ---- indexing ------------------------------------------------------------------------
    def _classify(self, node: torch.fx.Node) -> None:
        if node.op == "output":
            self.output_node = node
            self.chain[node] = ()
            return
        if node.op == "get_attr":
            self.static[node] = self._attr_text(node)
            return
        name = op_name(node)
        val = node.meta.get("val")
        if (node.op == "call_module" and node.target in HIDDEN_TARGETS) or name in HIDDEN_TARGETS:
            self.hidden.add(node)
            return
        if node.op == "call_function" and name in ("sym_size", "sym_numel", "sym_stride"):
            self.static[node] = self.dims.text(val) if val is not None else name
            return
        if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
            src = node.args[0]
            if isinstance(src.meta.get("val"), (tuple, list)):
                self.folded[node] = (src, node.args[1])
                self.chain[node] = self.chain.get(src, ())
                return
        if node.op == "placeholder":
            if not isinstance(val, (torch.Tensor, torch.SymInt)):
                self.hidden.add(node)  # a constant flag baked into the graph
            self.placeholders.append(node)
            return
        self.chain[node] = self._stack_chain(node)

    def _stack_chain(self, node: torch.fx.Node) -> tuple[str, ...]:
        """The node's composite chain from its nn_module_stack (read once per stack object: edits keep them)."""
        stack = node.meta.get("nn_module_stack") or {}
        memo = node.meta.get(_CHAIN_MEMO)
        if memo is None or memo[0] is not stack:
            memo = self._chains.get(id(stack))  # replicated layers share one stack dict per module
        if memo is None or memo[0] is not stack:
            chain, classes = [], []
            for path, cls in stack.values():
                if not isinstance(path, str) or path == "" or path.startswith("_empty_nn_module_stack"):
                    continue
                if chain and path == chain[-1]:
                    continue
                classes.append((path, cls.rsplit(".", 1)[-1] if isinstance(cls, str) else getattr(cls, "__name__", str(cls))))
                chain.append(path)
            memo = (stack, tuple(chain), tuple(classes))
            self._chains[id(stack)] = memo
        if node.meta.get(_CHAIN_MEMO) is not memo:
            node.meta[_CHAIN_MEMO] = memo
        for path, cls in memo[2]:
            if path not in self.classes:
                self.classes[path] = cls
        return memo[1]

    def _attr_text(self, node: torch.fx.Node) -> str:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return "[" + ", ".join(self.dims.text(d) for d in val.shape) + "]"
        try:
            t = self.captured.gm.get_parameter(node.target)
        except AttributeError:
            try:
                t = self.captured.gm.get_buffer(node.target)
            except AttributeError:
                t = getattr(self.captured.gm, str(node.target), None)
        if isinstance(t, torch.Tensor):
            return "[" + ", ".join(str(d) for d in t.shape) + "]"
        return str(node.target)

    def _count_parameters(self) -> dict[str, int]:
        """Parameters under each module path, a tensor shared by two modules counted in both (once at any common parent)."""
        counts: dict[str, int] = {}
        seen: set[tuple[str, int]] = set()
        for name, p in self.captured.gm.named_parameters(remove_duplicate=False):
            parts = name.split(".")[:-1]
            for i in range(len(parts) + 1):
                prefix = ".".join(parts[:i])
                if (prefix, id(p)) not in seen:
                    seen.add((prefix, id(p)))
                    counts[prefix] = counts.get(prefix, 0) + p.numel()
        return counts

    # ---- queries -----------------------------------------------------------------------------
    def meta(self, node: torch.fx.Node) -> TensorMeta | None:
        """Shape texts of a value, kept with the node for its value object (an edit leaves untouched nodes' values)."""
        val = node.meta.get("val")
        memo = node.meta.get(_META_MEMO)
        if memo is None or memo[0] is not val or memo[1] is not self.dims:
            memo = (val, self.dims, tensor_meta(val, self.dims))
            node.meta[_META_MEMO] = memo
        return memo[2]

    def param_count(self, path: str) -> int:
        if self.tree.kinds.get(path) == "stack":
            return sum(self.param_count(c) for c in self.children.get(path, []))
        return self._param_counts.get(path, 0)

    def class_name(self, path: str) -> str:
        if path not in self.classes:
            raise ViewError(self.tree.unknown_path_message(path))
        return self.classes[path]

    def paths(self) -> list[str]:
        """Every composite path, parents before children."""
        return self.tree.paths()

    def parent(self, path: str) -> str | None:
        return self.tree.parent(path)

    def breadcrumbs(self, path: str) -> list[tuple[str, str]]:
        """[(label, path)] from the root: [("GPT2LMHeadModel", ""), ("transformer", "transformer"), ("h.0 … ×12", …)]."""
        self.class_name(path)
        return self.tree.breadcrumbs(path)

    def label(self, path: str, parent: str) -> str:
        return self.tree.label(path, parent)

    def scope(self, path: str) -> tuple[str, ...]:
        """The module chain whose code a view's names are read in: the module itself, or the one a group/stack is in."""
        p = path
        while p and p in self.tree.kinds:
            p = self.tree.stack_parent.get(p) if self.tree.kinds[p] == "stack" else self.tree.parent(p)
        return self.sem.scope(p or "")

    # ---- views -------------------------------------------------------------------------------
    def _nodes_in(self, path: str, depth: int):
        """The graph's nodes, in graph order, whose chain holds `path` at `depth` (all of them for the root): indexed
        once, so deriving every view of an 80-layer model costs the nodes inside each view, not the whole graph each."""
        if depth == 0:
            return self.captured.gm.graph.nodes
        if self._members is None:
            members: dict[tuple[int, str], list[torch.fx.Node]] = {}
            for node in self.captured.gm.graph.nodes:
                for i, p in enumerate(self.chain.get(node, ())):
                    members.setdefault((i, p), []).append(node)
            self._members = members
        return self._members.get((depth - 1, path), ())

    def _rep(self, node: torch.fx.Node, path: str, depth: int) -> str | None:
        """The block representing `node` in the view of `path`, or None if node is outside it."""
        chain = self.chain.get(node)
        if chain is None:
            return None
        if depth and (len(chain) < depth or chain[depth - 1] != path):
            return None
        if node in self.folded:
            return self._rep(self.folded[node][0], path, depth)
        if len(chain) > depth:
            return composite_id(chain[depth])
        return primitive_id(node.name)

    def view(self, path: str = "") -> CompositeView:
        """Derive the blocks, links and table rows of one composite level."""
        cls = self.class_name(path)
        depth = 0 if path == "" else self.tree.depth(path)
        in_id, out_id = f"{composite_id(path)}#in", f"{composite_id(path)}#out"
        blocks: dict[str, Block] = {}
        inputs: dict[str, Port] = {}
        outputs: dict[str, Port] = {}
        links: list[Link] = []
        seen_links: set[str] = set()

        def block_for(bid: str) -> Block:
            if bid not in blocks:
                blocks[bid] = self._make_block(bid, path)
            return blocks[bid]

        def value_port(block: Block, direction: str, value: torch.fx.Node, name: str | None = None) -> Port:
            ports = block.inputs if direction == "in" else block.outputs
            for p in ports:
                if p.value == value.name:
                    return p
            port = Port(f"{block.id}/{direction}/{name or value.name}", name or value.name, value.name, self.meta(value),
                        _port_label(name) if name else "")
            ports.append(port)
            return port

        def link(src: Port, dst: Port, value: torch.fx.Node) -> None:
            lid = f"{src.id}->{dst.id}"
            if lid not in seen_links:
                seen_links.add(lid)
                links.append(Link(lid, src.id, dst.id, value.name, self.meta(value)))

        boundary_in = Block(in_id, "input", "inputs", "view inputs", module_path=path)
        boundary_out = Block(out_id, "output", "outputs", "view outputs", module_path=path)

        for node in self._nodes_in(path, depth):
            if node in self.static or node in self.hidden or node.op in ("output", "placeholder") or node in self.folded:
                continue
            rep = self._rep(node, path, depth)
            if rep is None:
                continue
            blk = block_for(rep)
            # incoming data
            for pos, (arg_name, arg) in enumerate(self._node_args(node)):
                if not isinstance(arg, torch.fx.Node):
                    if blk.kind == "primitive" and _is_constant(arg):
                        blk.static_inputs.append(StaticInput(_port_label(arg_name), _const_text(arg)))
                    continue
                if arg in self.static:
                    if blk.kind == "primitive":
                        src = arg.target if arg.op == "get_attr" else None
                        blk.static_inputs.append(StaticInput(_port_label(arg_name), self.static[arg], src))
                    continue
                if arg in self.hidden:
                    continue
                src_rep = self._rep(arg, path, depth)
                if src_rep == rep:
                    continue
                dst_port = value_port(blk, "in", arg, arg_name if blk.kind == "primitive" else None)
                residual = self.sem.residual_operand(node) if blk.kind == "primitive" else None
                if residual is not None:  # a residual add reads the branch's output ("input") and the skip
                    dst_port.label = "residual" if residual is arg else "input"
                if src_rep is None:
                    if arg.name not in inputs:
                        inputs[arg.name] = Port(f"{in_id}/out/{arg.name}", arg.name, arg.name, self.meta(arg))
                    link(inputs[arg.name], dst_port, arg)
                else:
                    src_port = value_port(block_for(src_rep), "out", arg)
                    link(src_port, dst_port, arg)
            # outgoing data
            values = [node]
            if isinstance(node.meta.get("val"), (tuple, list)):
                values = [u for u in node.users if u in self.folded]
            for value in values:
                out_port = value_port(blk, "out", value) if blk.kind == "primitive" else None
                if out_port is None and not value.users and isinstance(value.meta.get("val"), torch.Tensor):
                    out_port = value_port(blk, "out", value)  # nothing reads it yet (a bare LoRA Layer): a port to wire from
                for user in value.users:
                    if user in self.hidden or user in self.static:
                        continue
                    if user.op == "output" or self._rep(user, path, depth) is None:
                        out_port = out_port or value_port(blk, "out", value)
                        name = self._output_name(value) if user.op == "output" and not path else value.name  # id only
                        if value.name not in outputs:
                            outputs[value.name] = Port(f"{out_id}/in/{name}", name, value.name, self.meta(value))
                        link(out_port, outputs[value.name], value)

        boundary_in.outputs = list(inputs.values())
        boundary_out.inputs = list(outputs.values())
        ordered = ([boundary_in] if inputs else []) + list(blocks.values()) + ([boundary_out] if outputs else [])
        self._name_values(ordered, links, self.scope(path))
        return CompositeView(path, cls, ordered, links, self._variables(ordered))

    def _name_values(self, blocks: list[Block], links: list[Link], scope: tuple[str, ...]) -> None:
        """Give every port and link the display name of its value as the source writes it: a rebound name is
        carried by each of its values, and `step` says which binding each is (tooltips)."""
        order: list[str] = []
        for b in blocks:
            for p in b.outputs + b.inputs:
                if p.value not in order:
                    order.append(p.value)
        shown = [self.sem.name(self.nodes[v], scope) for v in order]
        steps = rebound_steps(shown, [self.sem.statement(self.nodes[v], scope) for v in order])
        names, step = dict(zip(order, shown)), dict(zip(order, steps))
        for b in blocks:
            for p in b.inputs + b.outputs:
                p.name, p.step = names[p.value], step[p.value]
        for link in links:
            link.name, link.step = names.get(link.value, link.value), step.get(link.value, "")

    def _node_args(self, node: torch.fx.Node):
        names = _arg_names(node)
        out = []
        for i, a in enumerate(node.args):
            name = names[i] if i < len(names) else f"arg{i}"
            if isinstance(a, (list, tuple)) and any(isinstance(x, torch.fx.Node) for x in a):
                out.extend((f"{name}[{j}]", x) for j, x in enumerate(a))
            else:
                out.append((name, a))
        out.extend(node.kwargs.items())
        return out

    def _output_name(self, value: torch.fx.Node) -> str:
        outs = self.output_node.args[0] if self.output_node is not None else ()
        flat = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        for i, o in enumerate(flat):
            if o is value and i < len(self.captured.output_names):
                return self.captured.output_names[i]
        return value.name

    def _make_block(self, bid: str, view_path: str) -> Block:
        if bid.startswith("m:"):
            path = bid[2:]
            kind = self.tree.kinds.get(path, "module")
            role = {"stack": "stack"}.get(kind) or self.sem.module_role(path) or (
                self.sem.groups[path].kind if kind == "function" else None)
            return Block(bid, "composite", self.tree.title(path, view_path),
                         self.tree.subtitles.get(path, self.classes[path]), module_path=path,
                         param_count=self.param_count(path), role=role, group=kind)
        node = self.nodes[bid[2:]]
        chain = self.chain.get(node, ())
        title = op_name(node)
        if node.op == "call_module":
            title = str(node.target).rsplit(".", 1)[-1]
        return Block(bid, "primitive", title, pytorch_name(node), module_path=chain[-1] if chain else "",
                     node=node.name, role=self.sem.role(node))

    def _variables(self, blocks: list[Block]) -> list[VariableRow]:
        rows = []
        for b in blocks:
            for p in b.outputs:
                if p.meta is None:
                    continue
                producer = "input" if b.kind == "input" else (b.title if b.kind == "primitive" else f"{b.title} ({b.subtitle})")
                rows.append(VariableRow(p.name, producer, p.meta.shape_text, p.meta.example_text, p.meta.dtype, p.id,
                                        p.value, p.step))
        return rows


def _is_constant(x) -> bool:
    return isinstance(x, (int, float, bool, str, torch.dtype, torch.device, torch.memory_format, torch.layout)) or (
        isinstance(x, (list, tuple)) and all(isinstance(e, (int, float, bool)) for e in x) and len(x) > 0)


_ARG_LABELS = {"self": "input", "mat1": "input", "mat2": "weight", "attn_mask": "mask", "tensors": "inputs",
               "indices": "indices", "condition": "condition"}
_NO_LIMIT = 2 ** 62  # slice bounds at INT64 max/min mean "to the end"


def _port_label(arg_name: str) -> str:
    """What an argument means, for a person: 'self' -> 'input', 'attn_mask' -> 'mask', 'tensors[1]' -> 'inputs[1]'."""
    base, _, index = arg_name.partition("[")
    label = _ARG_LABELS.get(base, base)
    return f"{label}[{index}" if index else label


def _const_text(x) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int) and abs(x) >= _NO_LIMIT:
        return "None"
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, torch.dtype):
        return str(x).removeprefix("torch.")
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_const_text(e) for e in x) + "]"
    return str(x)
