"""The graph layer: the captured fx GraphModule (the truth) and the block view derived from it."""

from graphsurgeon.graph.meta import DimNames, TensorMeta, tensor_meta
from graphsurgeon.graph.captured import CapturedModel
from graphsurgeon.graph.view import Block, BlockGraph, CompositeView, Link, Port, StaticInput, VariableRow

__all__ = [
    "Block", "BlockGraph", "CapturedModel", "CompositeView", "DimNames", "Link", "Port",
    "StaticInput", "TensorMeta", "VariableRow", "tensor_meta",
]
