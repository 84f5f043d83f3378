"""ViewSnapshot: every composite view of a captured model as plain data, saved as JSON.

The editor paints a snapshot while torch.export runs (a cold capture of GPT-2 costs seconds), then
swaps in the live CapturedModel. A snapshot answers the read-only questions the window asks of a
BlockGraph — view(path), paths(), parent(), breadcrumbs() — and nothing that needs the fx graph.
"""

from __future__ import annotations

import difflib

from graphsurgeon.errors import ViewError
from graphsurgeon.graph.blocks import Block, CompositeView, Link, Port, StaticInput, VariableRow
from graphsurgeon.graph.meta import TensorMeta

FORMAT = 2  # bump when the saved layout of a snapshot changes


class ViewSnapshot:
    """The views of one model, read back from `as_dict()` data; stands in for CapturedModel and BlockGraph."""

    version = -1  # never equal to a live model's version: layouts cached for a snapshot are its own

    def __init__(self, data: dict) -> None:
        self.model_class: str = data["model_class"]
        self.source_name: str = data["source_name"]
        self.modules_only: bool = bool(data.get("modules_only"))  # graph.module_tree: modules, no dataflow yet
        self.children: dict[str, list[str]] = data["children"]
        self.crumbs: dict[str, list[tuple[str, str]]] = {p: [tuple(c) for c in cs] for p, cs in data["crumbs"].items()}
        self.search: dict[str, tuple[str, str]] = {k: tuple(v) for k, v in data["search"].items()}
        self._views: dict[str, dict] = data["views"]
        # module paths of the Linear / Conv1D projections: a LoRA dropped on one is queued until the capture is in
        self.projections: dict[str, None] = dict.fromkeys(data.get("projections", []))  # in module order
        self._parsed: dict[str, CompositeView] = {}

    # the CapturedModel side: the window calls cm.blocks()
    def blocks(self) -> "ViewSnapshot":
        return self

    # the BlockGraph side
    def paths(self) -> list[str]:
        return list(self._views)

    def parent(self, path: str) -> str | None:
        return next((p for p, kids in self.children.items() if path in kids), None)

    def breadcrumbs(self, path: str) -> list[tuple[str, str]]:
        self._check(path)
        return list(self.crumbs[path])

    def view(self, path: str = "") -> CompositeView:
        self._check(path)
        if path not in self._parsed:
            try:
                self._parsed[path] = _view_from_dict(self._views[path])
            except (KeyError, TypeError, ValueError, AttributeError):  # a cache file that was changed by hand
                raise ViewError(f"the cached view of {path or self.model_class!r} is damaged; it is shown when the "
                                "capture is ready.") from None
        return self._parsed[path]

    def _check(self, path: str) -> None:
        if path not in self._views:
            near = difflib.get_close_matches(path, list(self._views), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else "; see `graphsurgeon inspect MODEL --tree`."
            raise ViewError(f"{self.model_class} has no composite {path!r}{hint}")


def search_entries(bg) -> dict[str, tuple[str, str]]:
    """Find targets: label → (composite path to open, block id to select), for every module and op."""
    if isinstance(bg, ViewSnapshot):
        return dict(bg.search)
    *_, out = _search_steps(bg)
    return out


def _search_steps(bg, every: int = 200):
    """search_entries of a live BlockGraph in steps: None after every `every` ops, then the entries."""
    from graphsurgeon.graph.view import op_name  # a live BlockGraph: torch is loaded (a snapshot is read without it)

    out = {p: (bg.parent(p) or "", f"m:{p}") for p in bg.paths() if p}
    for p in bg.paths():  # groups and stacks by their titles too: "Causal mask (transformer)"
        if p and p in bg.tree.titles:
            out.setdefault(f"{bg.tree.titles[p]} ({bg.parent(p) or 'root'})", (bg.parent(p) or "", f"m:{p}"))
    for i, (node, chain) in enumerate(bg.chain.items()):
        if node.op == "call_function" and node not in bg.hidden:
            where = chain[-1] if chain else ""
            out[f"{node.name} ({where or 'root'})"] = (where, f"n:{node.name}")
            named = bg.sem.name(node, bg.scope(where))  # the value's name as the code there reads it
            out.setdefault(f"{named} · {op_name(node)} ({where or 'root'})", (where, f"n:{node.name}"))
        if i % every == every - 1:
            yield None
    yield out


def take_snapshot(cm) -> dict:
    """Every composite view of `cm` as JSON-ready data (ViewSnapshot(take_snapshot(cm)) reads it back)."""
    *_, data = snapshot_steps(cm)
    return data


def snapshot_steps(cm):
    """take_snapshot in small steps, for the editor to run between frames: yields None after each view, then the
    snapshot's data."""
    bg = cm.blocks()
    paths = bg.paths()
    views = {}
    for p in paths:
        views[p] = view_dict(bg.view(p))
        yield None
    for search in _search_steps(bg):
        if search is None:
            yield None
    search = {k: list(v) for k, v in search.items()}
    from graphsurgeon.graph.semantics.dataflow import projection

    projections = [hit["module"] for hit in map(projection, cm.gm.graph.nodes) if hit is not None]
    yield {
        "format": FORMAT,
        "model_class": cm.model_class,
        "source_name": cm.source_name,
        "children": {p: list(bg.children.get(p, [])) for p in paths},
        "crumbs": {p: [list(c) for c in bg.breadcrumbs(p)] for p in paths},
        "search": search,
        "views": views,
        "projections": list(dict.fromkeys(projections)),
    }


def _meta_dict(m: TensorMeta | None) -> dict | None:
    return None if m is None else {"shape": list(m.shape), "example_shape": list(m.example_shape), "dtype": m.dtype}


def _port_dict(p: Port) -> dict:
    return {"id": p.id, "name": p.name, "value": p.value, "meta": _meta_dict(p.meta), "label": p.label, "step": p.step}


def view_dict(v: CompositeView) -> dict:
    """`dataclasses.asdict(v)`, written out: asdict's generic deep copy was most of a 405B snapshot's time."""
    blocks = [{"id": b.id, "kind": b.kind, "title": b.title, "subtitle": b.subtitle,
               "inputs": [_port_dict(p) for p in b.inputs], "outputs": [_port_dict(p) for p in b.outputs],
               "static_inputs": [{"name": s.name, "text": s.text, "source": s.source} for s in b.static_inputs],
               "module_path": b.module_path, "param_count": b.param_count, "node": b.node, "role": b.role,
               "group": b.group} for b in v.blocks]
    links = [{"id": l.id, "src": l.src, "dst": l.dst, "value": l.value, "meta": _meta_dict(l.meta), "name": l.name,
              "step": l.step} for l in v.links]
    return {"path": v.path, "class_name": v.class_name, "blocks": blocks, "links": links,
            "variables": [dict(r.__dict__) for r in v.variables]}


def _meta(d: dict | None) -> TensorMeta | None:
    if d is None:
        return None
    return TensorMeta(shape=tuple(d["shape"]), example_shape=tuple(d["example_shape"]), dtype=d["dtype"])


def _port(d: dict) -> Port:
    return Port(d["id"], d["name"], d["value"], _meta(d["meta"]), d.get("label", ""), d.get("step", ""))


def _view_from_dict(d: dict) -> CompositeView:
    blocks = [Block(**{**b, "inputs": [_port(p) for p in b["inputs"]], "outputs": [_port(p) for p in b["outputs"]],
                       "static_inputs": [StaticInput(**s) for s in b["static_inputs"]]}) for b in d["blocks"]]
    links = [Link(**{**l, "meta": _meta(l["meta"])}) for l in d["links"]]
    return CompositeView(d["path"], d["class_name"], blocks, links, [VariableRow(**v) for v in d["variables"]])
