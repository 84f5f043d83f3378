"""Model sources: a preset, a local Hugging Face folder, or a hub id found in the local cache.

Each becomes a `ModelRecipe`: what to build (config + class) and where its weights are, so the
model can be built on the meta device first and given weights only when something needs them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from graphsurgeon.capture.presets import is_preset, load_preset, preset_names
from graphsurgeon.errors import SourceError


@dataclass
class ModelRecipe:
    """How to build one Hugging Face model, with or without its weights."""

    name: str  # what the user typed: "gpt2", "./my-bert"
    config: dict  # config.json contents
    weights_dir: Path | None  # a folder with *.safetensors, or None for random weights
    note: str  # one line on where the weights come from

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else ""

    def hf_config(self, attn_implementation: str):
        import transformers

        model_type = self.config.get("model_type")
        if model_type not in transformers.CONFIG_MAPPING:
            raise SourceError(
                f"{self.name}: unknown model_type {model_type!r} in config.json; "
                "use a model type this version of transformers knows (bert, gpt2, llama, opt, …)."
            )
        fields = {k: v for k, v in self.config.items() if k != "model_type"}
        config = transformers.CONFIG_MAPPING[model_type](**fields)
        config._attn_implementation = attn_implementation
        return config

    def model_class(self):
        import transformers

        arch = self.architecture
        cls = getattr(transformers, arch, None) if arch else None
        if cls is None:
            if arch:
                raise SourceError(f"{self.name}: config.json names the class {arch!r}, which transformers does not have.")
            return transformers.AutoModel
        return cls

    def build(self, device: str = "cpu", attn_implementation: str = "sdpa", with_weights: bool = True):
        """The model (an nn.Module) on `device` ("meta": architecture only), with real weights when there are any."""
        import torch

        config = self.hf_config(attn_implementation)
        cls = self.model_class()
        if device == "meta" or not with_weights or self.weights_dir is None:
            torch.manual_seed(0)  # random weights are the same on every run
            with torch.device(device):
                model = cls._from_config(config, attn_implementation=attn_implementation) if hasattr(cls, "_from_config") else cls(config)
            model._graphsurgeon_weights = "meta" if device == "meta" else "random"
            return model.eval()
        try:
            model = cls.from_pretrained(self.weights_dir, config=config, local_files_only=True,
                                        attn_implementation=attn_implementation, use_safetensors=True)
        except Exception as err:  # noqa: BLE001 - any loader failure becomes one sentence
            raise SourceError(f"{self.name}: could not load the weights in {self.weights_dir} ({_first_line(err)}).") from err
        model._graphsurgeon_weights = "real"
        return model.eval()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def resolve(source: str) -> ModelRecipe:
    """Turn what the user typed into a ModelRecipe, or raise a SourceError that says what to do."""
    if is_preset(source):
        return _from_preset(source)
    path = Path(os.path.expanduser(source))
    if path.exists():
        return _from_folder(path, source)
    if source.startswith((".", "/", "~")) or os.sep in source.rstrip(os.sep) and source.count("/") != 1:
        raise SourceError(f"{source}: no such file or folder; give a preset ({', '.join(preset_names())}) or a folder with config.json.")
    return _from_hub_cache(source)


def _from_preset(name: str) -> ModelRecipe:
    preset = load_preset(name)
    cached = _cached_snapshot(preset.hub_id) if preset.hub_id else None
    if cached is not None and list(cached.glob("*.safetensors")):
        return ModelRecipe(name, preset.config, cached, f"real weights from the local Hugging Face cache ({cached})")
    why = "not in the local Hugging Face cache" if preset.hub_id else "a preset without published weights"
    return ModelRecipe(name, preset.config, None, f"random weights ({name} is {why})")


def _from_folder(path: Path, name: str) -> ModelRecipe:
    if not path.is_dir():
        raise SourceError(f"{name} is a file; give the folder that holds config.json and *.safetensors.")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SourceError(f"{name} has no config.json; give a folder written by save_pretrained (config.json + *.safetensors).")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{config_file} is not valid JSON ({err}); fix or regenerate it with save_pretrained.") from err
    if not isinstance(config, dict) or "model_type" not in config:
        raise SourceError(f"{config_file} has no model_type; it should be a Hugging Face config.json.")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            raise SourceError(f"{name} holds only pickle weights (*.bin/*.pt), which graphsurgeon never loads; "
                              "convert them to safetensors (save_pretrained(..., safe_serialization=True)).")
        return ModelRecipe(name, config, None, f"random weights ({name} has no *.safetensors)")
    for f in files:
        check_safetensors(f)
    return ModelRecipe(name, config, path, f"real weights from {path}")


def check_safetensors(file: Path) -> None:
    """Raise a SourceError naming the file if it is not a complete safetensors file."""
    from safetensors import safe_open

    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header of {header_len} bytes does not fit in {size} bytes")
            header = json.loads(fh.read(header_len))
        data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + data_end > size:
            raise ValueError(f"file is {size} bytes, its header needs {8 + header_len + data_end}")
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except Exception as err:  # noqa: BLE001
        raise SourceError(f"{file} is corrupt or truncated ({_first_line(err)}); copy or save it again.") from err


def _cached_snapshot(hub_id: str) -> Path | None:
    """The local snapshot folder of a hub id, looked up offline; None when it is not cached."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - anything but a hit means "not cached"
        return None


def _from_hub_cache(hub_id: str) -> ModelRecipe:
    cached = _cached_snapshot(hub_id)
    if cached is None:
        raise SourceError(
            f"{hub_id!r} is not a preset, not a folder, and not in the local Hugging Face cache; graphsurgeon never "
            f"downloads: on a machine with internet run `huggingface-cli download {hub_id}` (or save_pretrained to a "
            f"folder) and pass that folder. Presets: {', '.join(preset_names())}."
        )
    return _from_folder(cached, hub_id)
