"""Validation: the local check before an insertion, and full fake-tensor propagation on demand."""

from graphsurgeon.validate.diagnostics import Diagnostic, ValidationError
from graphsurgeon.validate.full import validate_full
from graphsurgeon.validate.local import check_insertion

__all__ = ["Diagnostic", "ValidationError", "check_insertion", "validate_full"]
