"""The layout of the generated files: what `ruff format --line-length 119` (transformers' own line length) would
leave as it is, without needing ruff.

The writer's lines are single statements; this pass gives them the formatter's spelling: double-quoted strings, a
trailing comment that does not fit moved onto its own line above the statement, and a statement longer than the
limit split at its last bracket, its contents on one indented line when they fit there, else one item per line with
a trailing comma (an item that still does not fit split again, at its operators or its last bracket). Statements
already spread over several lines (docstrings, the templates) are left as written.
"""

from __future__ import annotations

import io
import re
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
        line = _hug_powers(_double_quotes(line, single[i]), single[i])
        line = _space_slices_before_comment(line)
        out.append(_fit(line, _line_tokens(line)))
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


def _hug_powers(line: str, tokens: list[tokenize.TokenInfo]) -> str:
    """`a ** b` -> `a**b` where both operands are simple (a name, a number or a dotted name, with an optional unary
    minus), as ruff format writes powers."""
    toks = [t for t in tokens if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT)]
    for k in range(len(toks) - 2, 0, -1):
        if toks[k].string != "**" or not (_simple_operand(toks, k, -1) and _simple_operand(toks, k, 1)):
            continue
        a, b = toks[k - 1].end[1], toks[k + 1].start[1]
        line = line[:a] + "**" + line[b:]
    return line


def _line_tokens(line: str) -> list[tokenize.TokenInfo]:
    """The tokens of one single-line statement (positions in `line`)."""
    skip = (tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
    return [t for t in tokenize.generate_tokens(io.StringIO(line + "\n").readline) if t.type not in skip]


def _space_slices_before_comment(line: str) -> str:
    """The slices of the statement's code spaced as ruff spaces them (its comment left as written)."""
    comment = next((t for t in _line_tokens(line) if t.type == tokenize.COMMENT), None)
    code = line if comment is None else line[: comment.start[1]]
    body = code.rstrip()
    return _space_slices(body) + line[len(body):]


def _space_slices(code: str) -> str:
    """A slice's colons spaced as ruff spaces them: `x[a.b : c]`, `x[: n + 1]`, `x[f(1) :]` where a bound is more
    than a name or a number (with its minus), `x[1:n]`, `x[:-1]` where every bound is one."""
    out, i = [], 0
    while i < len(code):
        c = code[i]
        if c in "'\"":
            end = _string_end(code, i)
            out.append(code[i:end])
            i = end
            continue
        if c == "[":
            close = _matching_close(code, i)
            if close is None:
                return "".join(out) + code[i:]
            inner = _space_slices(code[i + 1 : close])
            before = "".join(out).rstrip()[-1:]
            if before and (before.isalnum() or before in "_)]\"'") and "lambda" not in inner:
                inner = ", ".join(_spaced_slice(item) for item in _top_level_split(inner, ","))
            out.append("[" + inner + "]")
            i = close + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _spaced_slice(item: str) -> str:
    """One subscript item; a slice gets spaces around its colons when a bound is not simple."""
    bounds = _top_level_split(item, ":")
    if len(bounds) == 1 or all(not b or re.fullmatch(r"-?\w+(\.\d+)?", b) for b in bounds):
        return ":".join(bounds)
    text = bounds[0]
    for b in bounds[1:]:
        text = (text + " :" if text else ":") + (" " + b if b else "")
    return text


def _string_end(code: str, i: int) -> int:
    """Where the string literal opening at `i` ends (just after its closing quote)."""
    quote = code[i : i + 3] if code[i : i + 3] in ("'''", '"""') else code[i]
    j = i + len(quote)
    while j < len(code):
        if code[j] == "\\":
            j += 2
        elif code.startswith(quote, j):
            return j + len(quote)
        else:
            j += 1
    return len(code)


def _matching_close(code: str, open_: int) -> int | None:
    """Where the bracket opened at `open_` closes."""
    depth = 0
    for i, c in _outside_strings(code):
        if i < open_:
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return i
    return None


def _simple_operand(toks: list[tokenize.TokenInfo], op: int, step: int) -> bool:
    """Whether the operand on the `step` side (-1 left, 1 right) of the operator at `op` is a simple one."""
    i = op + step
    if step == 1 and toks[i].string == "-" and i + 1 < len(toks):
        i += 1
    while True:  # a dotted name, read away from the operator
        if toks[i].type not in (tokenize.NAME, tokenize.NUMBER):
            return False
        nxt = i + step
        if 0 <= nxt < len(toks) and toks[nxt].string == "." and 0 <= nxt + step < len(toks):
            i = nxt + step
            continue
        after = toks[nxt].string if 0 <= nxt < len(toks) else ""
        return after not in ((")", "]", ".") if step == -1 else ("(", "[", "."))


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
    return above + (_split_operators(code, indent) or _split_chain(code, indent) or _split(code, indent))


def _assignment(code: str) -> tuple[str, str] | None:
    """(target, value) of `target = value` with a plain name or attribute as its target, else None."""
    eq = next((i for i, c in _outside_strings(code) if c == "=" and code[i - 1] not in "=<>!+-*/%&|^@:"
               and code[i + 1 : i + 2] != "="), None)
    if eq is None or any(c in _OPEN for i, c in _outside_strings(code[:eq])):
        return None
    return code[:eq].rstrip(), code[eq + 1 :].strip()


def _split_operators(code: str, indent: str) -> list[str] | None:
    """`target = a * b * (c)` (two or more operators of the loosest kind at the top level of the value) as ruff writes
    it: the value in parentheses on its own line, or one operand per line when that is too long."""
    if _assignment(code) is None:
        return None
    target, value = _assignment(code)
    operands = _operands(value)
    if len(operands) < 3:
        return None
    inner = indent + "    "
    if len(inner) + len(value) <= LINE_LENGTH:
        return [f"{target} = (", inner + value, indent + ")"]
    return [f"{target} = ("] + [line for o in operands for line in _part(o, inner, "")] + [indent + ")"]


def _split_chain(code: str, indent: str) -> list[str] | None:
    """`target = a(x).b(y).c(z)` (two or more calls chained after a bracket, nothing else at the top level) as ruff
    writes it: the value in parentheses on its own line, or one link of the chain per line when that is too long."""
    if _assignment(code) is None:
        return None
    target, value = _assignment(code)
    links, start = [], 0
    for i, c in _top_level(value):
        if c == "." and value[i - 1] in _CLOSE:
            links.append(value[start:i])
            start = i
        elif c in "+-*/%<>=!&|^@~, ":
            return None  # an operator (or a keyword) at the top level: not a plain chain
    links.append(value[start:])
    if len(links) < 3:
        return None
    inner = indent + "    "
    if len(inner) + len(value) <= LINE_LENGTH:
        return [f"{target} = (", inner + value, indent + ")"]
    return [f"{target} = ("] + [inner + link for link in links] + [indent + ")"]


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
    if len(items) == 1 and not magic:  # one argument that does not fit: split it in turn, no comma added
        return [head] + _part(items[0], inner, "") + [indent + tail]
    return [head] + [line for item in items for line in _part(item, inner, ",")] + [indent + tail]


def _part(item: str, indent: str, end: str) -> list[str]:
    """An item of a split bracket on its own line, `end` after it; one that does not fit is split again as ruff
    splits it: a comprehension before its `for`, a binary expression before each operator of its loosest kind,
    else at its last bracket."""
    if len(indent) + len(item) + len(end) <= LINE_LENGTH:
        return [indent + item + end]
    cut = next((i for i, _ in _top_level(item) if item.startswith(" for ", i)), None)
    if cut is not None:  # a comprehension: its element, then its `for` clause
        return [indent + item[:cut], indent + item[cut + 1 :] + end]
    operands = _operands(item)
    if len(operands) > 1:
        return [indent + o for o in operands[:-1]] + [indent + operands[-1] + end]
    if item.endswith(tuple(_CLOSE)):
        lines = _split(indent + item, indent)
        lines[-1] += end
        return lines
    return [indent + item + end]


def _operands(item: str) -> list[str]:
    """`a + b * c` -> [`a`, `+ b * c`]: the item cut before each top-level arithmetic operator of the loosest kind
    it has ([item] when it has none, or has a comparison, a boolean or a conditional that binds looser)."""
    top = {i for i, _ in _top_level(item)}
    if any(f" {w} " in item for w in ("and", "or", "if", "not", "in", "is", "lambda")) or \
            any(c in "=<>" for i, c in _top_level(item)):
        return [item]
    for ops in (("|",), ("^",), ("&",), ("+", "-"), ("*", "//", "/", "%", "@")):  # loosest first, as Python binds
        cuts = [i for i in sorted(top) if item[i] == " " and any(
            item.startswith(f" {o} ", i) and i + len(o) + 1 in top for o in ops)]
        if cuts:
            return [item[: cuts[0]]] + [item[a + 1 : b] for a, b in zip(cuts, cuts[1:] + [len(item)])]
    return [item]


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
    items = _top_level_split(body, ",")
    return items[:-1] if items and not items[-1] else items


def _top_level_split(body: str, sep: str) -> list[str]:
    """`body` split at each `sep` outside brackets and strings, each part stripped."""
    parts, start = [], 0
    for i, c in _top_level(body):
        if c == sep:
            parts.append(body[start:i].strip())
            start = i + 1
    return parts + [body[start:].strip()]


def _top_level(code: str):
    """(index, character) of each character of `code` outside strings and brackets (brackets not included)."""
    depth = 0
    for i, c in _outside_strings(code):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0:
            yield i, c
