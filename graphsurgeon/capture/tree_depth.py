"""A known module tree at another depth: the first frame of a folder whose config is a known one but for its layer count.

A config that differs from a preset's only in the number of layers (gpt2 with `n_layer` 6) describes the same modules
with a longer or shorter layer stack, so its module tree (graph/module_tree data, no torch needed) is the known tree
with the stack cut or grown: layer i a copy of the last layer with its index in paths and titles, the stack's title
("h.0 … h.5 ×6") and the parameter counts of the stack and every module above it adjusted. Only a tree whose stack is
one run of alike layers is resized (a stack of mixed layer kinds, or per-layer config lists, is left to the worker);
the editor's worker builds the model on meta anyway and repaints if its tree differs.
"""

from __future__ import annotations

import copy
import re

COUNT_FIELD = re.compile(r"(^|_)(n_)?layers?$|^num_.*layers$|^n_layer$")  # a config's layer count (n_layer, num_hidden_layers)
_TITLE = re.compile(r"^(?P<leaf>.+)\.0 … (?P=leaf)\.(?P<last>\d+) ×(?P<n>\d+)$")


def depth_change(known: dict, config: dict, ignore: set[str]) -> tuple[str, int, int] | None:
    """(field, known count, wanted count) when `config` differs from `known` in one layer-count field only."""
    keys = (set(known) | set(config)) - ignore
    diff = [k for k in keys if known.get(k) != config.get(k)]
    if len(diff) != 1 or not COUNT_FIELD.search(diff[0]):
        return None
    old, new = known.get(diff[0]), config.get(diff[0])
    if type(old) is not int or type(new) is not int or new < 2 or new > 100_000:
        return None
    return diff[0], old, new


def resize_tree(tree: dict, old: int, new: int) -> dict | None:
    """`tree` with its one stack of `old` alike layers holding `new` layers (None: no such stack, or it cannot tell)."""
    stacks = [p for p, kids in tree["children"].items()
              if len(kids) == old and kids == [f"{p}.{i}" for i in range(old)]]
    if len(stacks) != 1:
        return None
    stack = stacks[0]
    parent = tree["search"][stack][0]
    block = _block(tree, parent, stack)
    m = _TITLE.match(block["title"]) if block else None
    if m is None or int(m["n"]) != old or int(m["last"]) != old - 1:
        return None
    sizes = [_block(tree, stack, layer)["param_count"] for layer in tree["children"][stack]]
    if len(set(sizes)) != 1:
        return None
    out = copy.deepcopy(tree)
    last = f"{stack}.{old - 1}"
    subtree = [p for p in tree["children"] if p == last or p.startswith(last + ".")]
    for i in range(new, old):  # cut
        gone = f"{stack}.{i}"
        for key in ("children", "crumbs", "search", "views"):
            for p in [p for p in out[key] if p == gone or p.startswith(gone + ".")]:
                del out[key][p]
    for i in range(old, new):  # grow: copies of the last layer
        _copy_layer(out, tree, subtree, last, f"{stack}.{i}", m["leaf"], old - 1, i)
    out["children"][stack] = [f"{stack}.{i}" for i in range(new)]
    layer_blocks = {b["module_path"]: b for b in tree["views"][stack]["blocks"]}
    out["views"][stack]["blocks"] = [_moved(layer_blocks[last], last, f"{stack}.{i}", m["leaf"], old - 1, i)
                                     if i >= old else layer_blocks[f"{stack}.{i}"] for i in range(new)]
    title = f"{m['leaf']}.0 … {m['leaf']}.{new - 1} ×{new}"
    cls = out["views"][stack]["class_name"]
    out["views"][stack]["class_name"] = re.sub(rf"×{old}$", f"×{new}", cls)
    for crumbs in out["crumbs"].values():
        for c in crumbs:
            if c[1] == stack:
                c[0] = title
    if "projections" in tree:
        out["projections"] = _resized_list(tree["projections"], stack, old, new)
    delta = (new - old) * sizes[0]
    path = stack
    while path:  # the stack's block and every block above it hold `delta` more (or fewer) parameters
        up = out["search"][path][0]
        b = _block(out, up, path)
        b["param_count"] += delta
        if path == stack:
            b["title"], b["subtitle"] = title, re.sub(rf"×{old}$", f"×{new}", b["subtitle"])
        path = up
    return out


def _resized_list(paths: list[str], stack: str, old: int, new: int) -> list[str]:
    """Module paths in module order with the stack's layers cut to `new`, or grown by copies of its last layer's."""
    def layer(p: str) -> int | None:
        head, _, rest = p.partition(stack + ".")
        index = rest.split(".")[0]
        return int(index) if not head and index.isdigit() else None

    last = f"{stack}.{old - 1}"
    last_ones = [p for p in paths if layer(p) == old - 1]
    out = []
    for p in paths:
        if layer(p) is None or layer(p) < new:
            out.append(p)
        if last_ones and p == last_ones[-1]:
            out += [_swap(q, last, f"{stack}.{i}") for i in range(old, new) for q in last_ones]
    return out


def _block(tree: dict, view: str, path: str) -> dict | None:
    return next((b for b in tree["views"][view]["blocks"] if b["module_path"] == path), None)


def _swap(text: str, old: str, new: str) -> str:
    return new + text[len(old):] if text == old or text.startswith(old + ".") else text


def _moved(block: dict, old: str, new: str, leaf: str, i_old: int, i_new: int) -> dict:
    b = copy.deepcopy(block)
    b["module_path"] = _swap(b["module_path"], old, new)
    b["id"] = "m:" + b["module_path"]
    if b["title"] == f"{leaf}.{i_old}":
        b["title"] = f"{leaf}.{i_new}"
    return b


def _copy_layer(out: dict, tree: dict, subtree: list[str], old: str, new: str, leaf: str, i_old: int, i_new: int) -> None:
    for p in subtree:
        q = _swap(p, old, new)
        out["children"][q] = [_swap(c, old, new) for c in tree["children"][p]]
        out["search"][q] = [_swap(tree["search"][p][0], old, new), "m:" + q]
        out["crumbs"][q] = [[f"{leaf}.{i_new}" if c[1] == old else c[0], _swap(c[1], old, new)]
                            for c in tree["crumbs"][p]]
        view = copy.deepcopy(tree["views"][p])
        view["path"] = q
        view["blocks"] = [_moved(b, old, new, leaf, i_old, i_new) for b in view["blocks"]]
        out["views"][q] = view
