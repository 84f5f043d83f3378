"""User-facing errors: each message is one clear sentence saying what was wrong and what to do."""


class GraphsurgeonError(Exception):
    """Base class; the CLI and the editor show `str(err)` and never a traceback."""


class SourceError(GraphsurgeonError):
    """A model source could not be found or loaded (path, config, weights, hub id)."""


class CaptureError(GraphsurgeonError):
    """torch.export could not capture the model."""


class ViewError(GraphsurgeonError):
    """A composite path or block id names nothing in the graph."""
