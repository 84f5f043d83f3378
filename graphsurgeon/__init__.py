"""graphsurgeon: see a PyTorch model as a node graph, add LoRA, export a folder that runs anywhere."""

from graphsurgeon.errors import GraphsurgeonError

__all__ = ["GraphsurgeonError", "capture"]
__version__ = "0.1.0"


def capture(source, **kwargs):
    """Capture a model source (preset name, local folder, or nn.Module) into a CapturedModel."""
    from graphsurgeon.capture import capture as _capture

    return _capture(source, **kwargs)
