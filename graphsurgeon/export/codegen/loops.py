"""A `for` loop over a run of alike layers that feed each other, as HF writes it: `for layer in self.h:` /
`hidden_states = layer(hidden_states, …)`, the carried value named what the loop makes; one module called once per
layer (ALBERT's shared layers): `for _ in range(config.num_hidden_layers):` (a mixin of the FunctionWriter;
statements.py finds the runs)."""

from __future__ import annotations

import re

from graphsurgeon.export.codegen.body import Line, Stmt, module_of
from graphsurgeon.export.codegen.scopes import Scope
from graphsurgeon.export.codegen.statements import _carry


class Loops:
    def _emit_loop(self, st: Stmt) -> None:
        scopes = st.loop
        first, last = scopes[0], scopes[-1]
        carry = _carry(first, scopes[1], strict=st.kinds is None)
        container, _, i0 = first.path.rpartition(".")
        base = module_of(self.scope).path
        again = first.path == scopes[1].path  # one module called once per layer: `for _ in range(...)`
        if again:
            seq = f"range({self.env.config.repeats(base, len(scopes))})"
        else:
            seq = self.env.attr(base, container)
            n = len(self.prog.cm.gm.get_submodule(container)._modules) if container else 0
            lo, hi = int(i0), int(last.path.rpartition(".")[2]) + 1
            if (lo, hi) != (0, n):
                seq += f"[{lo}:{hi}]"
            else:
                self.env.looped.add(container)
            if st.classes is not None:  # built in __init__ from the config list that names each layer's class
                self.env.layer_classes[container] = st.classes
        kind_of = self._kind_mappings(st, base)
        args, targets = [], [None] * len(last.outputs)
        for j, v in enumerate(first.inputs):
            k = next((k for jj, k in carry if jj == j), None)
            if j in kind_of:
                args.append(kind_of[j])
                continue
            if k is None:
                args.append(self.arg(v))
                continue
            name = self.name_of.get(v) or self.arg(v)
            want = self._sanitize(self._want(last.outputs[k]))  # what the loop makes (`hidden_states`), as HF
            # writes `hidden_states = inputs_embeds` before its loop
            if not self._dead_after_loop(v, first) or (name != want and not self.canonical):
                fresh = self._take(object(), want)
                self.lines.append(Line(f"{fresh} = {name}"))
                name = fresh
            args.append(name)
            targets[k] = name
        args += [self._sym_key(k) for k in first.sizes]
        for k, o in enumerate(last.outputs):
            if targets[k] is None:
                targets[k] = self._take(o, self._want(o))
            else:
                self.bound[targets[k]] = o
                self.name_of[o] = targets[k]
        var = "layer"
        head = f"for {var} in {seq}:"
        if again:
            var, head = self.env.attr(base, first.path), f"for _ in {seq}:"
        if st.kinds is not None:
            field = st.kinds[0]
            head = f"for {var}, {_singular(field)} in zip({seq}, self.{field}):"
        self.lines.append(Line(head, blocks=self._blocks(st)))
        self.lines.append(Line(f"{', '.join(targets)} = {var}({', '.join(args)})", depth=1, comment=self._comment(st),
                               blocks=self._blocks(st)))

    def _kind_mappings(self, st: Stmt, base: str) -> dict[int, str]:
        """For a loop over layers of several kinds: `causal_mask_mapping = {"sliding_attention": …, …}` written
        before it, as HF writes it, the module's `self.layer_types` read from the config; input position -> the
        argument (`causal_mask_mapping[layer_type]`)."""
        if st.kinds is None:
            return {}
        field, table = st.kinds
        self.env.config.use_list(base, field, self.prog.cm.config[field])
        out = {}
        for j, by_kind in table.items():
            items = [(kind, self.arg(v)) for kind, v in by_kind.items()]
            stem = re.sub(r"_\d+$", "", items[0][1]) if items[0][1].isidentifier() else "value"
            mapping = self._take(object(), f"{stem}_mapping")
            self.lines.append(Line(f"{mapping} = {{{', '.join(f'{k!r}: {a}' for k, a in items)}}}"))
            out[j] = f"{mapping}[{_singular(field)}]"
        return out

    def _dead_after_loop(self, v, first: Scope) -> bool:
        inside = set(first.nodes())
        return v not in self.scope.outputs and all(u in inside for u in self.prog.users.get(v, []))


def _singular(field: str) -> str:
    """`layer_type` for `layer_types`: the loop variable of one entry."""
    return field[:-1] if field.endswith("s") else f"{field}_entry"
