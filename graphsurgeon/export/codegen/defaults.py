"""Hugging Face's `if position_ids is None:` block: an optional input's default computed only when it is not given.

The writer writes `position_ids = position_ids if position_ids is not None else <default>` after the lines that
compute the default's parts. The lines only that default reads (a chain, each read by the next alone) move into the
block and rebind the input's name, as Hugging Face's source does:

    if position_ids is None:
        position_ids = attention_mask.cumsum(1)
        position_ids = position_ids * attention_mask - 1
"""

from __future__ import annotations

import re

from graphsurgeon.export.codegen.body import Body, Line

DEFAULT = re.compile(r"^(\w+) = \1 if \1 is not None else (.+)$")
ASSIGN = re.compile(r"^(\w+) = (.+)$")
SIZE = re.compile(r"\.(size\(|shape\b)")
NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")


def hoist_defaults(body: Body) -> None:
    """Rewrite each `x = x if x is not None else …` line of `body` (not a LoRA line) as an `if x is None:` block."""
    i = 0
    while i < len(body.lines):
        line = body.lines[i]
        m = DEFAULT.match(line.text)
        if m is None or line.optional:
            i += 1
            continue
        chain = _chain(body, i, m.group(1), m.group(2))
        i = _rewrite(body, i, m.group(1), m.group(2), chain)


def _names(text: str) -> set[str]:
    return set(NAME.findall(re.sub(r"\"[^\"]*\"|'[^']*'", "", text)))


def _chain(body: Body, at: int, given: str, expr: str) -> list[int]:
    """Indices (in order) of the earlier lines only the default at `at` reads, each read by the next alone."""
    lines, depth = body.lines, body.lines[at].depth
    chain: list[int] = []
    reader = expr
    while True:
        reads = _names(reader)
        found = [k for k in range(at - 1, -1, -1) if lines[k].depth == depth and not lines[k].optional
                 and (a := ASSIGN.match(lines[k].text)) and a.group(1) in reads and k not in chain]
        if len(found) != 1:
            return sorted(chain)
        k = found[0]
        name, rhs = ASSIGN.match(lines[k].text).groups()
        others = [j for j, ln in enumerate(lines) if j != k and j not in chain and j != at and name in _names(ln.text)]
        if name == given or given in _names(rhs) or others or any(name in _names(r) for r in body.returns) \
                or SIZE.search(rhs):  # a size (`seq = input_ids.size(1)`) keeps its own name
            return sorted(chain)
        moved_past = [ASSIGN.match(lines[j].text) for j in range(k + 1, at) if j not in chain]
        if any(a and a.group(1) in _names(rhs) for a in moved_past):  # a name it reads is rebound before the default
            return sorted(chain)
        chain.append(k)
        reader = rhs


def _rewrite(body: Body, at: int, given: str, expr: str, chain: list[int]) -> int:
    """Put the block in place of line `at`; the index after it."""
    line = body.lines[at]
    moved = [body.lines[k] for k in chain]
    renamed = {ASSIGN.match(ln.text).group(1) for ln in moved}
    block = [Line(f"if {given} is None:", line.depth, (), None, line.anchor)]
    for ln in moved:
        block.append(Line(_rename(ln.text, renamed, given), ln.depth + 1, ln.blocks, None, ln.anchor, ln.comment))
    block.append(Line(f"{given} = {_rename(expr, renamed, given)}", line.depth + 1, line.blocks, None, line.anchor,
                      line.comment))
    kept = [ln for k, ln in enumerate(body.lines[:at]) if k not in chain]
    body.lines = kept + block + body.lines[at + 1:]
    return len(kept) + len(block)


def _rename(text: str, names: set[str], to: str) -> str:
    for n in names:
        text = re.sub(rf"(?<![\w.]){re.escape(n)}\b", to, text)
    return text
