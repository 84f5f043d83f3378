"""Built-in presets: Hugging Face configs shipped in assets/presets, never downloaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parents[2] / "assets" / "presets"
DEFAULT_PRESET = "gpt2"


@dataclass(frozen=True)
class Preset:
    name: str  # "gpt2", "tiny-bert"
    description: str  # one line for menus and --help
    hub_id: str | None  # where real weights live in the local Hugging Face cache, if anywhere
    config: dict  # the Hugging Face config.json contents


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Preset:
    data = json.loads((PRESET_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return Preset(name, data.get("description", ""), data.get("hub_id"), data["config"])


def is_preset(name: str) -> bool:
    """A bare preset name ("gpt2", never "./gpt2", "/models/gpt2" or "modules/gpt2"), not shadowed by a model folder
    of that name in the working directory (a folder holding config.json wins, as in Hugging Face's from_pretrained)."""
    return name in preset_names() and not (Path(name) / "config.json").is_file()
