"""A `for` loop over a run of alike layers that feed each other, as HF writes it: `for layer in self.h:` /
`hidden_states = layer(hidden_states, …)`, the carried value named what the loop makes (a mixin of the
FunctionWriter; statements.py finds the runs)."""

from __future__ import annotations

from graphsurgeon.export.codegen.body import Line, Stmt, module_of
from graphsurgeon.export.codegen.scopes import Scope
from graphsurgeon.export.codegen.statements import _carry


class Loops:
    def _emit_loop(self, st: Stmt) -> None:
        scopes = st.loop
        first, last = scopes[0], scopes[-1]
        carry = _carry(first, scopes[1])
        container, _, i0 = first.path.rpartition(".")
        base = module_of(self.scope).path
        seq = self.env.attr(base, container)
        n = len(self.prog.cm.gm.get_submodule(container)._modules) if container else 0
        lo, hi = int(i0), int(last.path.rpartition(".")[2]) + 1
        if (lo, hi) != (0, n):
            seq += f"[{lo}:{hi}]"
        args, targets = [], [None] * len(last.outputs)
        for j, v in enumerate(first.inputs):
            k = next((k for jj, k in carry if jj == j), None)
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
        self.lines.append(Line(f"for {var} in {seq}:", blocks=self._blocks(st)))
        self.lines.append(Line(f"{', '.join(targets)} = {var}({', '.join(args)})", depth=1, comment=self._comment(st),
                               blocks=self._blocks(st)))

    def _dead_after_loop(self, v, first: Scope) -> bool:
        inside = set(first.nodes())
        return v not in self.scope.outputs and all(u in inside for u in self.prog.users.get(v, []))
