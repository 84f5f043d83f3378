"""The statements of one scope, in graph order: ops, calls of child scopes, LoRA adds, and `for` loops over runs of
alike layers of a ModuleList that feed each other (a mixin of the FunctionWriter)."""

from __future__ import annotations

import operator

import torch
import torch.fx

from graphsurgeon.export.codegen import names
from graphsurgeon.export.codegen.body import Stmt, module_of
from graphsurgeon.export.codegen.scopes import Program, Scope


class Statements:
    def _statements(self) -> list[Stmt]:
        out: list[Stmt] = []
        adds = {b.add_node: b for b in self.prog.loras if b.add_node}
        for item in self.scope.items:
            if isinstance(item, Scope):
                if not item.outputs:
                    continue
                first = item.nodes()[0]
                opt = self._optional(item.lora) if item.kind == "lora" else None
                out.append(Stmt(list(item.outputs), scope=item, line=self._line(first), optional=opt))
                continue
            node = item
            if node.target is operator.getitem and self.prog.owner.get(node.args[0]) is self.scope:
                continue
            val = node.meta.get("val")
            values = [node]
            if isinstance(val, (list, tuple)):
                slots = {u.args[1]: u for u in self.prog.users.get(node, []) if u in self.prog.owner}
                values = [slots.get(i) for i in range(len(val))]
            st = Stmt(values, node=node, line=self._line(node))
            block = adds.get(node.name)
            if block is not None and block.onto and any(s.kind == "lora" and s.lora is block for s in _kids(self.scope)):
                st.optional, st.lora_onto = self._optional(block), self.prog.rep(_node(self.prog, block.onto))
            out.append(st)
        return out

    def _optional(self, block) -> str:
        from graphsurgeon.export.codegen.scopes import lora_export_name

        path = lora_export_name(block)
        base = module_of(self.scope).path
        return path[len(base) + 1:] if base else path

    def _line(self, node: torch.fx.Node) -> str | None:
        frames = names.source_frames(node)
        return (frames[self.depth][0] or None) if len(frames) > self.depth else None

    def _loops(self, stmts: list[Stmt]) -> list[Stmt]:
        """Calls of consecutive alike layers of one ModuleList, each fed by the one before: one `for` loop. Layers
        that read one of a few values by their kind (Gemma's sliding / full attention masks) make one loop over the
        whole list when the config names each layer's kind (`layer_types`)."""
        out: list[Stmt] = []
        i = 0
        while i < len(stmts):
            j, k = self._run_end(stmts, i, strict=True), self._run_end(stmts, i, strict=False)
            kinds = self._kinds([s.scope for s in stmts[i:k]]) if k > j and stmts[i].scope.path != \
                stmts[i + 1].scope.path else None
            if kinds is not None:
                j = k
            classes = None  # layers of several classes, one per kind of a config list: the whole list, one loop
            mixed = self._run_end(stmts, i, strict=True, mixed=True)
            if mixed > j and kinds is None:
                classes = self._class_kinds([s.scope for s in stmts[i:mixed]])
                j = mixed if classes is not None else j
            if j - i >= 2:
                scopes = [s.scope for s in stmts[i:j]]
                out.append(Stmt(list(scopes[-1].outputs), loop=scopes, line=stmts[i].line, kinds=kinds,
                                classes=classes))
                i = j
            else:
                out.append(stmts[i])
                i += 1
        return out

    def _run_end(self, stmts: list[Stmt], i: int, strict: bool, mixed: bool = False) -> int:
        """The end of the run of linked calls from stmts[i] (strict: every layer reads the same other inputs; mixed:
        layers of other classes too)."""
        j = i + 1
        pattern = self._link(stmts[i], stmts[i + 1], strict, mixed) if i + 1 < len(stmts) else None
        while pattern is not None and j < len(stmts) and self._link(stmts[j - 1], stmts[j], strict, mixed) == pattern:
            j += 1
        return j

    def _class_kinds(self, scopes: list[Scope]) -> tuple[str, dict[str, str]] | None:
        """(config list, {kind: layer path of that kind's class}) when the run is a whole ModuleList whose layers are
        of several classes, the class of each layer named by its entry in a per-layer config list (Laguna's
        `mlp_layer_types`: dense and sparse layers); else None."""
        container = scopes[0].path.rpartition(".")[0]
        n = len(self.prog.cm.gm.get_submodule(container)._modules) if container else 0
        if [s.path for s in scopes] != [f"{container}.{i}" for i in range(n)]:
            return None
        classes = [self.env.class_names.get(s.key) for s in scopes]
        if None in classes or len(set(classes)) < 2:
            return None
        for name, kinds in kind_lists(self.prog.cm.config, n):
            first: dict[str, str] = {}  # kind -> the first layer of that kind
            if all(classes[int(first.setdefault(kind, s.path).rpartition(".")[2])] == cls
                   for kind, s, cls in zip(kinds, scopes, classes)):
                return name, first
        return None

    def _kinds(self, scopes: list[Scope]) -> tuple | None:
        """(config list, {input position: {kind: value}}) when the run is the whole list and each input its
        layers do not all share is one value per kind of a per-layer config list; else None."""
        container = scopes[0].path.rpartition(".")[0]
        n = len(self.prog.cm.gm.get_submodule(container)._modules) if container else 0
        if [s.path for s in scopes] != [f"{container}.{i}" for i in range(n)]:
            return None
        carried = {j for j, _ in _carry(scopes[0], scopes[1], strict=False) or ()}
        varying = [j for j in range(len(scopes[0].inputs))
                   if j not in carried and len({id(s.inputs[j]) for s in scopes}) > 1]
        for name, kinds in kind_lists(self.prog.cm.config, n):
            table: dict[int, dict] = {}
            for j in varying:
                by_kind: dict = {}
                if any(by_kind.setdefault(kind, s.inputs[j]) is not s.inputs[j] for kind, s in zip(kinds, scopes)):
                    break
                table[j] = by_kind
            else:
                return (name, table) if varying else None
        return None

    def _link(self, a: Stmt, b: Stmt, strict: bool = True, mixed: bool = False):
        """How b's inputs come from a (see `_carry`) when b calls the next alike layer after a (mixed: the next
        layer, of any class); else None."""
        if a.scope is None or b.scope is None or a.scope.kind != "module" or b.scope.kind != "module":
            return None
        (pa, _, ia), (pb, _, ib) = a.scope.path.rpartition("."), b.scope.path.rpartition(".")
        again = a.scope.path == b.scope.path  # one module called again (ALBERT's shared layer, once per layer)
        if not again and (pa != pb or pa not in self.env.lists or not (ia.isdigit() and ib.isdigit())
                          or int(ib) != int(ia) + 1):
            return None
        cls = self.env.class_names.get(a.scope.key)
        if cls is None or (cls != self.env.class_names.get(b.scope.key) and not (mixed and not again)):
            return None
        if len(a.scope.inputs) != len(b.scope.inputs) or len(a.scope.outputs) != len(b.scope.outputs):
            return None
        inside_b = set(b.scope.nodes())
        for o in a.scope.outputs:
            if any(u not in inside_b for u in self.prog.users.get(o, [])):
                return None
        carry = _carry(a.scope, b.scope, strict)
        return (again, *carry) if carry else None


def kind_lists(config: dict | None, n: int) -> list[tuple[str, list]]:
    """The config's lists of one kind name per layer (`layer_types` first), for a list of n layers."""
    found = [(k, v) for k, v in (config or {}).items() if isinstance(v, list) and len(v) == n and n > 1
             and all(isinstance(x, str) and x.isidentifier() for x in v) and len(set(v)) > 1]
    return sorted(found, key=lambda kv: kv[0] != "layer_types")


def _carry(a: Scope, b: Scope | None, strict: bool = True):
    """[(input position of b, output position of a)] when every output of a feeds b (strict: b's other inputs are
    a's); None otherwise."""
    if b is None:
        return None
    pairs = []
    for j, v in enumerate(b.inputs):
        if v in a.outputs:
            pairs.append((j, a.outputs.index(v)))
        elif j >= len(a.inputs) or (strict and a.inputs[j] is not v):
            return None
    if len(pairs) != len(a.outputs):
        return None
    return pairs


def _stmt_nodes(st: Stmt) -> list:
    if st.loop:
        return [n for s in st.loop for n in s.nodes()]
    if st.scope is not None:
        return st.scope.nodes()
    return [st.node] + [v for v in st.values if v is not None and v is not st.node]


def _kids(scope: Scope) -> list[Scope]:
    return [i for i in scope.items if isinstance(i, Scope)]


def _node(prog: Program, name: str) -> torch.fx.Node:
    return next(n for n in prog.cm.gm.graph.nodes if n.name == name)
