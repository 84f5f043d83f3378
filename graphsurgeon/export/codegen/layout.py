"""The layout of the generated files: what `ruff format --line-length 119` (transformers' own line length) would
leave as it is, without needing ruff.

The writer's lines are single statements; this pass gives them the formatter's spelling: double-quoted strings, a
trailing comment that does not fit moved onto its own line above the statement, and a statement longer than the
limit split at its last bracket, its contents on one indented line when they fit there, else one item per line with
a trailing comma. Statements already spread over several lines (docstrings, the templates) are left as written.
"""

from __future__ import annotations

import io
import tokenize

LINE_LENGTH = 119  # transformers' pyproject.toml: [tool.ruff] line-length = 119
_OPEN, _CLOSE = "([{", ")]}"


def format_source(text: str) -> str:
    """`text` (Python source) laid out as ruff format lays it out, for the statement shapes the writer emits."""
    return "\n".join(line for lines in format_lines(text.split("\n")) for line in lines)


def format_lines(lines: list[str]) -> list[list[str]]:
    """Per line of the source `lines`, the lines it is written as (one, or more where it is split)."""
    single = _single_line_statements("\n".join(lines) + "\n")
    out: list[list[str]] = []
    for i, line in enumerate(lines):
        if i not in single:
            out.append([line])
            continue
        line = _double_quotes(line, single[i])
        out.append(_fit(line, single[i]))
    return out


def _single_line_statements(text: str) -> dict[int, list[tokenize.TokenInfo]]:
    """Line index -> its tokens, for the lines that hold one whole statement (a comment line included)."""
    found: dict[int, list[tokenize.TokenInfo]] = {}
    current: list[tokenize.TokenInfo] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return found
    for tok in tokens:
        if tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING):
            continue
        if tok.type == tokenize.NL and not current:
            continue
        current.append(tok)
        comment_line = tok.type == tokenize.NL and all(t.type in (tokenize.COMMENT, tokenize.NL) for t in current)
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER) or comment_line:  # an NL inside brackets goes on
            rows = {t.start[0] for t in current} | {t.end[0] for t in current if t.type != tokenize.NEWLINE}
            if len(rows) == 1:
                found[current[0].start[0] - 1] = current
            current = []
    return found


def _double_quotes(line: str, tokens: list[tokenize.TokenInfo]) -> str:
    """'text' -> "text" where the string holds no double quote and no backslash (ruff's quote style)."""
    for tok in reversed(tokens):
        if tok.type != tokenize.STRING:
            continue
        s = tok.string
        prefix = s[: len(s) - len(s.lstrip("rbfuRBFU"))]
        body = s[len(prefix):]
        if body[:3] in ("'''", '"""') or not body.startswith("'") or '"' in body or "\\" in body:
            continue
        a, b = tok.start[1], tok.end[1]
        line = line[:a] + prefix + '"' + body[1:-1] + '"' + line[b:]
    return line


def _fit(line: str, tokens: list[tokenize.TokenInfo]) -> list[str]:
    """The statement on one line if it fits, else its comment above it and the code split at its last bracket."""
    if len(line) <= LINE_LENGTH or tokens[0].type == tokenize.COMMENT:  # a comment line stays as it is
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    comment = next((t for t in tokens if t.type == tokenize.COMMENT), None)
    code = line
    above = []
    if comment is not None and comment.start[1] > len(indent):
        code = line[: comment.start[1]].rstrip()
        above = [indent + comment.string]
    if len(code) <= LINE_LENGTH:
        return above + [code]
    return above + _split(code, indent)


def _split(code: str, indent: str) -> list[str]:
    """`head(body)tail` as `head(` / the body, one line or one item per line / `)tail`."""
    close = _last_close(code)
    if close is None:
        return [code]
    open_ = _matching_open(code, close)
    if open_ is None:
        return [code]
    head, body, tail = code[: open_ + 1], code[open_ + 1 : close].strip(), code[close:]
    inner = indent + "    "
    items = _top_level_items(body)
    magic = body.rstrip().endswith(",")
    if not magic and len(inner) + len(body) <= LINE_LENGTH:
        return [head, inner + body, indent + tail]
    return [head] + [f"{inner}{item}," for item in items] + [indent + tail]


def _outside_strings(code: str, stop: int | None = None):
    """(index, character) of each character of `code` outside string literals, up to `stop` (inclusive)."""
    quote, i, last = None, 0, len(code) - 1 if stop is None else stop
    while i <= last:
        c = code[i]
        if quote:
            if c == "\\":
                i += 1
            elif code.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif c in "'\"":
            quote = code[i : i + 3] if code[i : i + 3] in ("'''", '"""') else c
            i += len(quote) - 1
        else:
            yield i, c
        i += 1


def _last_close(code: str) -> int | None:
    """Where the last closing bracket outside strings is."""
    return max((i for i, c in _outside_strings(code) if c in _CLOSE), default=None)


def _matching_open(code: str, close: int) -> int | None:
    """Where the bracket closed at `close` opens."""
    opens = []
    for i, c in _outside_strings(code, close):
        if c in _OPEN:
            opens.append(i)
        elif c in _CLOSE:
            if not opens:
                return None
            start = opens.pop()
            if i == close:
                return start
    return None


def _top_level_items(body: str) -> list[str]:
    """The comma-separated items of a bracket's contents (commas inside brackets and strings do not split)."""
    items, depth, start = [], 0, 0
    for i, c in _outside_strings(body):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    rest = body[start:].strip()
    if rest:
        items.append(rest)
    return items
