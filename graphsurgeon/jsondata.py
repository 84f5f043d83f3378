"""JSON files are data the app distrusts, its own files too: one reader bounded in size and nesting, and a small
schema check. Nothing read here can raise anything but `DataError` (a ValueError) with one phrase saying why.

- `read_json(path, max_bytes=…, max_depth=…)`: refuses a file larger than max_bytes unread, text that is not UTF-8
  JSON, and nesting deeper than max_depth — measured before parsing, without recursion, so neither the parser nor
  any code that later walks the data recursively (json.dumps, a config walk) can hit RecursionError.
- `schema_problems(data, schema)`: the fields of `data` that do not fit `schema` ({"key": type | (types) |
  nested schema}; a key ending in "?" is optional), one phrase each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_ESCAPE = re.compile(rb"\\.", re.S)  # an escape in a JSON string (\" is no quote)
_OTHER = bytes(c for c in range(256) if c not in b'[]{}"')  # what the depth count drops


class DataError(ValueError):
    """A JSON file that does not fit, in a phrase that reads after "cannot read X: " (`why`: size, encoding,
    syntax or depth)."""

    def __init__(self, text: str, why: str) -> None:
        super().__init__(text)
        self.why = why


def nesting_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of the JSON text `raw` nest, brackets inside strings not counted.

    Vectorised (numpy): after the escapes are dropped every quote opens or closes a string, so a running count of
    quotes marks what is inside one, and a running sum of +1 / -1 per bracket outside gives the depth. A 1.2 MB view
    cache takes ~10 ms (its json.loads ~50 ms); no recursion, whatever the nesting.
    """
    import numpy as np

    data = np.frombuffer(_ESCAPE.sub(b"", raw).translate(None, _OTHER), dtype=np.uint8)  # quotes and brackets
    if data.size == 0:
        return 0
    step = np.zeros(256, dtype=np.int8)
    step[[ord("["), ord("{")]], step[[ord("]"), ord("}")]] = 1, -1
    steps = step[data]
    steps[(np.cumsum(data == ord('"'), dtype=np.int64) & 1).astype(bool)] = 0  # inside a string
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def loads(text: str | bytes, *, max_depth: int = 64, what: str = "a JSON file"):
    """Parse `text` (see read_json); raises DataError."""
    if nesting_depth(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")) > max_depth:
        raise DataError(f"it is nested too deeply to be {what} (more than {max_depth} levels)", "depth")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the depth bound comes first
        raise DataError(f"it is nested too deeply to be {what}", "depth") from None
    except ValueError as err:
        raise DataError(str(err), "syntax") from None


def read_json(path: str | Path, *, max_bytes: int, max_depth: int = 64, what: str = "a JSON file"):
    """The JSON value in `path`; DataError when it is too big (not read past max_bytes), not UTF-8, not JSON, or
    nested deeper than max_depth. OSError (missing, unreadable) is the caller's to word."""
    path = Path(path)
    with path.open("rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise DataError(f"it is larger than {_size(max_bytes)}, far more than {what} holds", "size")
    try:
        text = raw.decode("utf-8-sig")  # -sig: a BOM from a Windows editor is fine
    except UnicodeDecodeError as err:
        raise DataError(str(err), "encoding") from None
    return loads(text, max_depth=max_depth, what=what)


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n // 1024} KB"


def _type_name(t) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number", list: "a list",
             dict: "an object", type(None): "null"}
    if isinstance(t, tuple):
        return " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, getattr(t, "__name__", str(t)))


def _fits(value, t) -> bool:
    types = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool):  # JSON true is no number
        return bool in types
    if float in types and isinstance(value, int):
        return True
    return isinstance(value, types)


def schema_problems(data, schema: dict, where: str = "") -> list[str]:
    """The fields of `data` that do not fit `schema`, one phrase each ([] = it fits)."""
    if not isinstance(data, dict):
        return [f"{where or 'the file'} is {_type_name(type(data))}, not an object"]
    problems = []
    for key, want in schema.items():
        name = key.rstrip("?")
        field = f"{where}.{name}" if where else name
        if name not in data:
            if not key.endswith("?"):
                problems.append(f"{field} is missing")
            continue
        value = data[name]
        if isinstance(want, dict):
            problems += schema_problems(value, want, field)
        elif not _fits(value, want):
            problems.append(f"{field} is {_type_name(type(value))}, not {_type_name(want)}")
    return problems
