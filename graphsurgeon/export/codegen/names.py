"""The code generator's one window on the semantic layer (graph/semantics): value names and function groups.

The canvas and model.py use the same names: a value is called what `cm.semantics().name(node, scope)` calls it
as the code of its module reads it (`query_states`, `attn_output`, `causal_mask`), and a function group of the
canvas (the causal mask, rotary embedding, the attention function) is a function of model.py. Two canvas
groupings stay inline in the code: "Position ids" (a couple of ops) and "Embeddings" (it holds submodules,
which a plain function cannot call).
"""

from __future__ import annotations

import torch.fx

INLINE_KINDS = ("positions", "embeddings")


def value_name(cm, node: torch.fx.Node, module_path: str) -> str:
    """Display name of a value as the code of the module at `module_path` reads it (made unique by the writer)."""
    return cm.semantics().name(node, module_path)


def return_position(cm, node: torch.fx.Node, module_path: str) -> int | None:
    """Where the module's source returns value `node` (`return attn_output, position_bias`), None if unknown."""
    return cm.semantics().return_position(node, module_path)


def parameters(cm, node: torch.fx.Node, module_path: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """A module forward's declared parameters and {name its caller passes: parameter} for the call `node` ran in."""
    return cm.semantics().parameters(node, module_path)


def call_arguments(cm, group_path: str) -> tuple[str | None, ...]:
    """The names the model's source passes to the function of a function group, in call order."""
    return cm.semantics().call_arguments(group_path)


def role(cm, node: torch.fx.Node) -> str | None:
    return cm.semantics().role(node)


def function_groups(cm) -> dict[str, tuple[str, str, str]]:
    """fx node name -> (group path, function name, call key) for the ops of each function group written as a
    function."""
    out = {}
    for path, group in cm.semantics().groups.items():
        if group.kind in INLINE_KINDS:
            continue
        for n in group.nodes:
            out[n.name] = (path, group.function, f"fn:{path}")
    return out


def group_paths(cm) -> dict[str, str]:
    """Every function group's composite path -> the module path it runs in (inlined groups included)."""
    return {path: g.parent for path, g in cm.semantics().groups.items()}


def stack_path(cm, layer: str) -> str | None:
    """The canvas composite of the run of alike layers `layer` belongs to (`transformer.h`, `transformer.h[0:3]`)."""
    found = cm.semantics().stack_of(layer)
    if found is None:
        return None
    stack, run = found
    return stack.run_path(run)


def source_frames(node: torch.fx.Node) -> list[tuple[str, str]]:
    """(file:line, code) of each forward frame in the node's stack trace, outermost first."""
    from graphsurgeon.graph.semantics.source import scope_frames

    return [(f"{f.file}:{f.line}", f.code) if f is not None else ("", "") for f in scope_frames(node)]
