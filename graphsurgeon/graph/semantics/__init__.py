"""The semantic layer: what each part of the captured graph means to the model's authors (Qt-free).

Derived from the fx graph like the block view and recomputed after every edit; both surfaces a person
reads — the canvas (through the block view) and the exported model.py — take their names from here:

    sem = cm.semantics()
    sem.name(node, scope)      # "query_states", "attn_output", "lora_q.Ax" — as the code of `scope` reads it
    sem.return_position(node, path)  # where a value stands in the `return` of module `path`'s forward
    sem.call_arguments(group_path)   # the names the source passes to a function group's function
    sem.parameters(node, path)       # a module forward's declared parameters, and what the call binds to them
    sem.role(node)             # "query", "attn_weights", "causal_mask", "cos", "residual", …
    sem.module_role(path)      # "attention", "mlp", "norm", "q_proj", "lm_head", …
    sem.attentions             # per attention: core, q/k/v operands and their projections, mask, output projection
    sem.groups                 # function groups by composite path ("model.create_causal_mask")
    sem.stacks                 # layer stacks ("transformer.h": runs of isomorphic layers)

`dataflow` recognises projections and attention cores; `roles`, `names`, `groups` and `stacks` build on it.
"""

from __future__ import annotations

import os

import torch
import torch.fx

from graphsurgeon.graph.semantics.dataflow import unchanged_graph
from graphsurgeon.graph.semantics.groups import FunctionGroup, activation_title, find_groups
from graphsurgeon.graph.semantics.names import Namer, rebound_steps, unique_names
from graphsurgeon.graph.semantics.roles import Attention, Operand, Roles, find_roles
from graphsurgeon.graph.semantics.source import (call_arguments, call_binding, called_function, def_parameters,
                                                 module_paths, required_parameters, scope_frames)
from graphsurgeon.graph.semantics.stacks import LayerStack, find_stacks

__all__ = ["Attention", "FunctionGroup", "LayerStack", "Operand", "Semantics", "activation_title", "module_paths",
           "rebound_steps", "unique_names"]

HIDDEN_OPS = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size", "sym_constrain_range",
              "_assert_async", "_guards_fn"}


class Semantics:
    """Roles, names, function groups and layer stacks of one captured model's current graph."""

    def __init__(self, captured) -> None:
        gm = captured.gm
        self.gm = gm
        self.problems: list[str] = []  # analyses that failed on this graph (the views then fall back to fx names)
        lora_adds = {b.add_node for b in captured.loras.values() if b.add_node}
        with unchanged_graph():
            self.roles: Roles = self._guard("roles", lambda: find_roles(gm, captured.config, lora_adds), Roles())
            self.hidden: set[torch.fx.Node] = {n for n in gm.graph.nodes if _is_leftover(n)}
            self.groups: dict[str, FunctionGroup] = self._guard(
                "function groups", lambda: find_groups(gm, self.roles, self.hidden), {})
            self.stacks: list[LayerStack] = self._guard("layer stacks", lambda: find_stacks(gm), [])
        self._group_of = {n: g for g in self.groups.values() for n in g.nodes}
        self._namer = Namer(gm, self.roles, captured.loras, captured.output_names)
        self._lora_paths = {b.path: b for b in captured.loras.values()}
        self._chains: dict[str, tuple[str, ...]] = {}  # module path -> its module chain from the root
        for n in gm.graph.nodes:
            mods = module_paths(n)
            for i in range(len(mods)):
                self._chains.setdefault(mods[i], mods[:i + 1])

    def _guard(self, what: str, analyse, fallback):
        """Run one analysis; an architecture it does not understand gets plainer views, never a failed capture.

        GRAPHSURGEON_STRICT=1 re-raises (the tests set it), so a bug cannot hide behind the fallback.
        """
        try:
            return analyse()
        except Exception as err:  # noqa: BLE001 - recorded in `problems`, shown by `inspect`
            if os.environ.get("GRAPHSURGEON_STRICT") == "1":
                raise
            self.problems.append(f"{what}: {type(err).__name__}: {err}")
            return fallback

    @property
    def attentions(self) -> list[Attention]:
        return self.roles.attentions

    def name(self, node: torch.fx.Node, scope: tuple[str, ...] | str = ("",)) -> str:
        """The display name of a value as the code of the module `scope` reads it (a module chain, or a path)."""
        if isinstance(scope, str):
            scope = self.scope(scope)
        return self._namer.name(node, scope)

    def statement(self, node: torch.fx.Node, scope: tuple[str, ...] | str = ("",)) -> str | None:
        """The source line of the module `scope` (a module chain, or a path) that computes `node`."""
        if isinstance(scope, str):
            scope = self.scope(scope)
        return self._namer.statement(node, scope)

    def return_position(self, node: torch.fx.Node, path: str) -> int | None:
        """Where value `node` stands in what the forward of module `path` returns (None: not known)."""
        chain = self.scope(path)
        mods = module_paths(node)
        if len(chain) < 2 or len(mods) < len(chain) or mods[len(chain) - 1] != path:
            return None
        return self._namer.return_position(node, len(chain) - 2)

    def parameters(self, node: torch.fx.Node, path: str) -> tuple[tuple[str, ...], dict[str, str]]:
        """The parameters of module `path`'s forward as its source declares them, and {name the caller passes: the
        parameter it binds} for the call `node` ran in (BertOutput: ('hidden_states', 'input_tensor'),
        {'intermediate_output': 'hidden_states', 'attention_output': 'input_tensor'}); empty when unknown."""
        chain = self.scope(path)
        mods = module_paths(node)
        frames = scope_frames(node)
        k = len(chain) - 1
        if k < 1 or len(mods) <= k or mods[k] != path or len(frames) <= k or frames[k] is None or frames[k - 1] is None:
            return (), {}
        params = def_parameters(frames[k].file, frames[k].line)
        attr = next((p for p in reversed(path.split(".")) if not p.isdigit()), path)
        looped = path.rsplit(".", 1)[-1].isdigit()  # a layer of a list: called through a loop variable
        binding = call_binding(frames[k - 1].file, frames[k - 1].line, attr, params, looped)
        required = required_parameters(frames[k].file, frames[k].line)
        if not binding and len(required) == 1:  # a call the trace cannot show (through a helper such as HF's
            binding = {"": required[0]}  # apply_chunking_to_forward): one value can only be its one required parameter
        return params, binding

    def call_arguments(self, path: str) -> tuple[str | None, ...]:
        """The names the model's source passes to the function of group `path`, in call order (`query_states,
        key_states, value_states, attention_mask` for `attention_interface(self, query_states, …)`); () when
        the call cannot be read back."""
        group = self.groups.get(path)
        if group is None:
            return ()
        for node in group.nodes:
            for frame in reversed(scope_frames(node)):
                called = called_function(frame.code) if frame is not None else None
                if called and called.removeprefix("self.") == group.function:
                    return call_arguments(frame.file, frame.line, group.function)
        return ()

    def scope(self, path: str) -> tuple[str, ...]:
        """The module chain of a module path, from the root ('' first)."""
        return self._chains.get(path) or _chain(path)

    def role(self, node: torch.fx.Node) -> str | None:
        return self.roles.values.get(node)

    def module_role(self, path: str) -> str | None:
        if path in self._lora_paths or any(path.startswith(p + ".") for p in self._lora_paths):
            return "lora"
        return self.roles.modules.get(path)

    def group_of(self, node: torch.fx.Node) -> FunctionGroup | None:
        return self._group_of.get(node)

    def residual_operand(self, node: torch.fx.Node) -> torch.fx.Node | None:
        """For a residual add, the operand that skips the sublayer."""
        return self.roles.residuals.get(node)

    def stack_of(self, layer: str) -> tuple[LayerStack, list[str]] | None:
        """The stack and run a layer path belongs to, if it is in a run of ≥ 2 alike layers."""
        for stack in self.stacks:
            for run in stack.runs:
                if layer in run:
                    return (stack, run) if len(run) > 1 else None
        return None


def _chain(path: str) -> tuple[str, ...]:
    """The module chain of a module path ('a.b.3.c' -> ('', 'a', 'a.b.3', 'a.b.3.c')), numbered parts kept with their list."""
    if not path:
        return ("",)
    parts = path.split(".")
    out, cur = [""], []
    for i, p in enumerate(parts):
        cur.append(p)
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            continue  # 'h' alone is a ModuleList, not a module in the stack
        out.append(".".join(cur))
    return tuple(out)


def _is_leftover(node: torch.fx.Node) -> bool:
    """Capture leftovers nobody should see: guards and metadata asserts."""
    if node.op == "call_module" and node.target == "_guards_fn":
        return True
    if node.op != "call_function":
        return False
    name = getattr(node.target, "__name__", "")
    packet = getattr(node.target, "_overloadpacket", None)
    return (packet.__name__ if packet is not None else name) in HIDDEN_OPS
