"""The graph layer: the captured fx GraphModule (the truth) and the block view derived from it.

Names are loaded on first use, so plain-data parts (graph.blocks, graph.snapshot, graph.meta.TensorMeta) can be
imported without importing torch — the editor paints a cached view before torch is loaded.
"""

from importlib import import_module

_WHERE = {
    "DimNames": "meta", "TensorMeta": "meta", "tensor_meta": "meta", "CapturedModel": "captured",
    "Block": "blocks", "CompositeView": "blocks", "Link": "blocks", "Port": "blocks", "StaticInput": "blocks",
    "VariableRow": "blocks", "BlockGraph": "view",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'graphsurgeon.graph' has no attribute {name!r}")
    return getattr(import_module(f"graphsurgeon.graph.{_WHERE[name]}"), name)
