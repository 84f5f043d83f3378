"""Block geometry from measured text: fonts, label widths, static-input rows, port positions (Qt fonts, no items).

A block is as wide as its labels (nothing is cut, an input label never runs into an output label).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PySide6.QtGui import QFont, QFontMetricsF

from graphsurgeon.graph.blocks import Block
from graphsurgeon.ui.layout import Box

TITLE_PX, SUB_PX, PORT_PX = 13, 10, 11  # scene pixel sizes at 1:1
TITLE_MIN_PX = 10.0  # a title is never drawn smaller than this on screen (it grows in scene units instead)
LABEL_MIN_PX = 7.0  # port labels, subtitles and static inputs are hidden below this on screen
HEADER_H, ROW_H, PAD, MIN_W = 36.0, 16.0, 8.0, 72.0
TITLE_SLACK_PX = 16  # blocks are as wide as their title at this size: down to 10/16 zoom it is never elided


def font(px: int, bold: bool = False) -> QFont:
    f = QFont()
    f.setPixelSize(px)
    f.setBold(bold)
    return f


_METRICS: dict[tuple[int, bool], QFontMetricsF] = {}


def text_width(text: str, px: int, bold: bool = False) -> float:
    key = (px, bold)
    if key not in _METRICS:
        _METRICS[key] = QFontMetricsF(font(px, bold))
    return _METRICS[key].horizontalAdvance(text)


def static_items(block: Block) -> list[str]:
    """Static inputs as `name = value`, with `size[0..3]` folded into one `size = [batch, seq, -1, 64]`."""
    rows: list[tuple[str, list[str]]] = []
    for s in block.static_inputs:
        m = re.fullmatch(r"(.+)\[(\d+)\]", s.name)
        if m and rows and rows[-1][0] == m.group(1) + "[]":
            rows[-1][1].append(s.text)
        elif m:
            rows.append((m.group(1) + "[]", [s.text]))
        else:
            rows.append((s.name, [s.text]))
    return [f"{n[:-2]} = [{', '.join(v)}]" if n.endswith("[]") else f"{n} = {v[0]}" for n, v in rows]


STATIC_ROW_W = 150.0  # static inputs are packed into rows about this wide


def static_rows(block: Block) -> list[str]:
    """The static inputs packed into as few rows as read well: `dim = 2, start = 0, end = 8`."""
    rows: list[str] = []
    for item in static_items(block):
        if rows and text_width(rows[-1] + ", " + item, SUB_PX) <= STATIC_ROW_W:
            rows[-1] += ", " + item
        else:
            rows.append(item)
    return rows


def port_text(port) -> str:
    """What a port says: the argument's meaning for an op's input (`Port.label`, when the view has one), else the
    display name of the value (`Port.name`); the fx name is only in the tooltip."""
    return getattr(port, "label", None) or port.name


def shows_input_labels(block: Block) -> bool:
    """Input labels name arguments; one lone input of an op needs none (its value is named where it leaves)."""
    return block.kind != "primitive" or len(block.inputs) > 1


@dataclass
class Geometry:
    """Where everything of a block is drawn, in item coordinates."""

    w: float
    h: float
    in_y: dict[str, float]  # port id -> y
    out_y: dict[str, float]
    statics: list[str]
    statics_y0: float
    badge: str

    def box(self, block: Block) -> Box:
        return Box(self.w, self.h, tuple(self.in_y[p.id] for p in block.inputs),
                   tuple(self.out_y[p.id] for p in block.outputs))


def geometry(block: Block, badge: str = "") -> Geometry:
    """Size from the measured text: title (+ unbox icon), subtitle or badge, inputs/statics left, outputs right."""
    statics = static_rows(block)
    labelled = shows_input_labels(block)
    first_static = len(block.inputs) if labelled else 0  # unlabelled inputs leave the left of their rows free
    lin = [port_text(p) for p in block.inputs] if labelled else []
    left = max([text_width(t, PORT_PX) for t in lin] + [text_width(t, SUB_PX) + 12 for t in statics], default=0.0)
    right = max((text_width(port_text(p), PORT_PX) for p in block.outputs), default=0.0)
    icon = 22.0 if block.kind == "composite" else 0.0
    sub = badge or block.subtitle
    title_w = text_width(block.title, TITLE_SLACK_PX, True)  # room for a title redrawn larger when zoomed out a bit
    w = max(MIN_W, title_w + 2 * PAD + icon, text_width(sub, SUB_PX) + 2 * PAD + 6,
            left + right + 2 * PAD + (14 if left and right else 0))
    rows = max(first_static + len(statics), len(block.inputs), len(block.outputs), 1)
    in_y = {p.id: HEADER_H + (i + 0.5) * ROW_H for i, p in enumerate(block.inputs)}
    out_y = {p.id: HEADER_H + (i + 0.5) * ROW_H for i, p in enumerate(block.outputs)}
    return Geometry(math.ceil(w), HEADER_H + rows * ROW_H + 4, in_y, out_y, statics,
                    HEADER_H + first_static * ROW_H, badge)


