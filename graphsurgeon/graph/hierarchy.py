"""The composite tree of a view: modules (from nn_module_stack), function groups and layer stacks.

Each node gets a chain of composite paths from the root's child down. Module paths come from the node's
module stack; the semantic layer adds a stack run above numbered layers ("transformer.h" above
"transformer.h.3") and a function group below the module a call ran in ("model.create_causal_mask").
"""

from __future__ import annotations

import difflib

import torch.fx

from graphsurgeon.errors import ViewError


_GROUP_CLASSES = {"positions": "index arithmetic", "embeddings": "lookups + sum"}


class Hierarchy:
    """Composite paths: classes, titles, kinds, parents and children, labels and crumbs."""

    def __init__(self, root_class: str) -> None:
        self.classes: dict[str, str] = {"": root_class}  # path -> class / function / stack class text
        self.titles: dict[str, str] = {}  # path -> title when it is not the attribute name
        self.subtitles: dict[str, str] = {}  # path -> subtitle when it is not the class name
        self.kinds: dict[str, str] = {}  # path -> "function" | "stack" (modules are absent)
        self.stack_parent: dict[str, str] = {}  # stack run path -> the module its layers run in
        self.children: dict[str, list[str]] = {"": []}
        self._parent: dict[str, str] = {}

    def add_chain(self, chain: tuple[str, ...]) -> None:
        """Register a node's chain (parents before children, first seen first)."""
        parent = ""
        for path in chain:
            if path not in self._parent:
                self._parent[path] = parent
                self.children.setdefault(parent, []).append(path)
                self.children.setdefault(path, [])
            parent = path

    def nest(self, chains: dict[torch.fx.Node, tuple[str, ...]], sem) -> None:
        """Put stack runs above alike layers and function groups below their module, in every chain."""
        run_of: dict[str, str] = {}
        for stack in sem.stacks:
            for run in stack.runs:
                if len(run) < 2:
                    continue
                path = stack.run_path(run)
                for layer in run:
                    run_of[layer] = path
                self.classes[path] = f"{self.classes.get(run[0], 'Layer')} ×{len(run)}"
                self.titles[path] = stack.run_title(run)
                self.kinds[path] = "stack"
                self.stack_parent[path] = stack.parent
        holder: dict[str, str] = {}  # a submodule or group -> the group that holds it (an Embeddings group)
        for group in sem.groups.values():
            self.classes[group.path] = _GROUP_CLASSES.get(group.kind, f"{group.function}()")
            self.titles[group.path] = group.title
            self.kinds[group.path] = "function"
            for member in group.members:
                holder[member] = group.path
        for node, chain in chains.items():
            group = sem.group_of(node)
            if group is not None and (chain[-1] if chain else "") == group.parent:
                chain = chain + (group.path,)
            out: list[str] = []
            for path in chain:
                if path in run_of:
                    out.append(run_of[path])
                outer = holder.get(path)
                if outer is not None and outer not in out:
                    out.append(outer)
                out.append(path)
            chains[node] = tuple(out)

    # ---- queries -------------------------------------------------------------------------------
    def parent(self, path: str) -> str | None:
        if not path:
            return None
        return self._parent.get(path)

    def depth(self, path: str) -> int:
        depth, p = 0, path
        while p:
            parent = self.parent(p)
            if parent is None:
                raise ViewError(self.unknown_path_message(path))
            depth += 1
            p = parent
        return depth

    def paths(self) -> list[str]:
        """Every composite path, parents before children."""
        out, todo = [], [""]
        while todo:
            p = todo.pop(0)
            out.append(p)
            todo[0:0] = self.children.get(p, [])
        return out

    def label(self, path: str, parent: str) -> str:
        """The name of `path` inside `parent`: 'h.0' in 'transformer' (and in the stack of h.0 … h.11)."""
        while parent in self.kinds:  # inside a stack or a group, names read as in the module around them
            parent = self.stack_parent.get(parent) if self.kinds[parent] == "stack" else self._parent.get(parent, "")
        return path[len(parent) + 1:] if parent and path.startswith(parent + ".") else path

    def title(self, path: str, parent: str) -> str:
        return self.titles.get(path) or self.label(path, parent)

    def breadcrumbs(self, path: str) -> list[tuple[str, str]]:
        """[(label, path)] from the root: [("GPT2LMHeadModel", ""), ("transformer", "transformer"), …]."""
        crumbs = []
        p: str | None = path
        while p:
            parent = self.parent(p)
            if parent is None:
                break
            crumbs.append((self.title(p, parent), p))
            p = parent
        crumbs.append((self.classes[""], ""))
        return crumbs[::-1]

    def unknown_path_message(self, path: str) -> str:
        near = difflib.get_close_matches(path, list(self.classes), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else "; `inspect --tree` lists them."
        return f"no composite named {path!r} in {self.classes['']}{hint}"
