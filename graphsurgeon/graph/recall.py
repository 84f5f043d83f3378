"""Derived views of a graph state seen before: an undo returns the graph to an earlier state exactly.

fx edits happen in place: an undo erases the inserted nodes and gives the untouched nodes their former
arguments back, so the graph is made of the very same node objects, wired the same way, as before the
edit. The semantics and block index derived then are still exact; `Recall` keeps the last few with a
fingerprint of the graph they were derived from and hands one back when the fingerprint matches again.

The fingerprint holds every node in order with its op, target, arguments (nodes by identity, plain
constants by value, anything else by identity — kept alive by the entry, so an id cannot be reused
meanwhile), its value metadata and module stack (by identity), plus the model's LoRA blocks.
"""

from __future__ import annotations

import torch.fx

Node = torch.fx.Node

_PLAIN = (int, float, bool, str, type(None))
_MEMO = "_graphsurgeon_fingerprint"  # node.meta key: a node's entry, kept while the node, its arguments (immutable in
# fx: a change replaces the tuple), target, value and module stack are the same objects — an edit touches few nodes


def fingerprint(captured) -> tuple:
    """What a derivation of `captured` depends on, comparable without touching symbolic sizes."""
    keep: list = []  # objects compared by identity: held here so their ids stay theirs

    def key(a):
        if type(a) is Node:
            return a
        if isinstance(a, (list, tuple)):
            return (type(a), tuple(x if type(x) is Node else key(x) for x in a))
        if type(a) in _PLAIN:
            return (type(a), a)  # typed: 1, 1.0 and True are different arguments
        if isinstance(a, dict):
            return (dict, tuple((k, key(v)) for k, v in a.items()))
        keep.append(a)
        return (object, id(a))

    nodes = []
    for n in captured.gm.graph.nodes:
        meta = n.meta
        val, stack, memo = meta.get("val"), meta.get("nn_module_stack"), meta.get(_MEMO)
        args, kwargs, target = n.args, n.kwargs, n.target
        if memo is None or memo[0] is not n or memo[1] is not args or memo[2] is not kwargs or memo[3] is not target \
                or memo[4] is not val or memo[5] is not stack or memo[6][1] != n.op:
            start = len(keep)
            entry = (n, n.op, key(target), key(args), key(kwargs), id(val), id(stack))
            memo = meta[_MEMO] = (n, args, kwargs, target, val, stack, entry, tuple(keep[start:]))
        else:
            keep.extend(memo[7])
        keep.extend((val, stack))
        nodes.append(memo[6])
    loras = tuple((p, b.kind, b.add_node, tuple(b.nodes), b.wired_to, b.module_path, tuple(sorted(b.config.as_dict().items())))
                  for p, b in captured.loras.items())
    keep.append(captured.gm)
    return (id(captured.gm), tuple(nodes), loras, tuple(captured.output_names)), keep


class Recall:
    """The last few (fingerprint → derived views) of one captured model."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: list[tuple[tuple, list, dict]] = []  # (fingerprint, objects it holds, derived)

    def store(self, print_: tuple, keep: list, derived: dict) -> None:
        self._entries = [e for e in self._entries if e[0] != print_][-(self.size - 1):] + [(print_, keep, derived)]

    def find(self, print_: tuple) -> dict | None:
        for fp, _, derived in reversed(self._entries):
            if fp == print_:
                return derived
        return None
