"""Model sources: a preset, a local Hugging Face folder, or a hub id (from the local cache, else downloaded).

Each becomes a `ModelRecipe`: what to build (config + class) and where its weights are, so the
model can be built on the meta device first and given weights only when something needs them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from graphsurgeon.capture.presets import is_preset, load_preset, preset_names
from graphsurgeon.capture.weights_check import read_header, weight_files
from graphsurgeon.errors import SourceError
from graphsurgeon.jsondata import DataError, read_json

if TYPE_CHECKING:  # annotations only: torch is imported when a model is built
    import torch

MAX_CONFIG_BYTES = 16 * 2**20  # a config.json with a 1,000-label map is ~60 KB
MAX_CONFIG_DEPTH = 32  # multimodal configs nest ~5 deep


@dataclass
class ModelRecipe:
    """How to build one Hugging Face model, with or without its weights."""

    name: str  # what the user typed: "gpt2", "./my-bert"
    config: dict  # config.json contents
    weights_dir: Path | None  # a folder with model.safetensors (or its shards), or None for random weights
    note: str  # one line on where the weights come from
    _shapes: dict | None = field(default=None, repr=False)  # tensor name -> shape from the files' headers, read once
    _dtype_note: str = field(default="", repr=False)  # another float width in the file, converted while loading

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise SourceError(f"{self.name}: architectures in config.json is {archs!r}; it should be a list of class "
                              'names like ["GPT2LMHeadModel"].')
        return archs[0] if archs else ""

    def hf_config(self, attn_implementation: str):
        import transformers

        model_type = self.config.get("model_type")
        if model_type not in transformers.CONFIG_MAPPING:
            raise SourceError(
                f"{self.name}: unknown model_type {model_type!r} in config.json; "
                "use a model type this version of transformers knows (bert, gpt2, llama, opt, …)."
            )
        fields = {k: _special_floats(v) for k, v in self.config.items() if k != "model_type"}
        nan = next((k for k, v in fields.items() if _has_nan(v)), None)
        if nan is not None:  # transformers accepts NaN and the model computes NaN everywhere: never what was meant
            raise SourceError(f"{self.name}: config.json sets {nan} to NaN; give it a number (the value the model was "
                              "trained with).")
        try:
            config = transformers.CONFIG_MAPPING[model_type](**fields)
        except Exception as err:  # noqa: BLE001 - transformers' own config validation, blamed on config.json
            raise SourceError(f"{self.name}: transformers does not accept config.json ({_first_line(err)}); "
                              "fix config.json.") from None
        config._attn_implementation = attn_implementation
        return config

    def model_class(self):
        import transformers

        arch = self.architecture
        cls = getattr(transformers, arch, None) if arch else None
        if cls is None:
            if arch:
                raise SourceError(f"{self.name}: config.json names the class {arch!r}, which transformers does not have.")
            return self._base_model_class()
        if not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
            raise SourceError(f"{self.name}: config.json names {arch!r} in architectures, which is not a transformers "
                              "model class; name the model class, e.g. [\"BertModel\"].")
        wanted = getattr(cls, "config_class", None)
        model_type = self.config.get("model_type")
        given = transformers.CONFIG_MAPPING[model_type] if model_type in transformers.CONFIG_MAPPING else None
        if isinstance(wanted, type) and given is not None and not issubclass(given, wanted) \
                and not _auto_maps(model_type, arch):
            raise SourceError(f"{self.name}: config.json names {arch} (a {wanted.model_type!r} model) but its model_type "
                              f"is {model_type!r}; make architectures and model_type agree.")
        return cls

    def _base_model_class(self):
        """No architectures in config.json: the model type's base model, as AutoModel.from_config builds it."""
        import transformers

        model_type = self.config.get("model_type")
        try:
            return transformers.MODEL_MAPPING[transformers.CONFIG_MAPPING[model_type]]
        except (KeyError, ValueError):
            raise SourceError(f"{self.name}: config.json names no class in architectures and transformers has no base "
                              f"model for model_type {model_type!r}; add the class, e.g. \"architectures\": "
                              "[\"GPT2LMHeadModel\"].") from None

    def _construct(self, cls, config, device: str, attn_implementation: str) -> torch.nn.Module:
        """The model from its config on `device`, without weights; a config the model rejects is blamed on config.json."""
        import contextlib

        import torch

        from graphsurgeon.capture.meta_init import skip_meta_init

        try:
            with torch.device(device), (skip_meta_init() if device == "meta" else contextlib.nullcontext()):
                if hasattr(cls, "_from_config"):
                    return cls._from_config(config, attn_implementation=attn_implementation)
                return cls(config)
        except Exception as err:  # noqa: BLE001 - the model's own checks of its config, in one sentence
            if "attention implementation" in str(err) or "attn_implementation" in str(err):
                raise SourceError(f"{self.name}: transformers cannot build {cls.__name__} with {attn_implementation} "
                                  f"attention ({_first_line(err)}); try --eager-attention.") from err
            memory = _memory_reason(self.config, err)
            if memory:
                raise SourceError(f"{self.name}: {memory}.") from None
            raise SourceError(f"{self.name}: config.json describes a model transformers cannot build: "
                              f"{_config_reason(self.config, err)}; fix config.json.") from None

    def check_weights(self, model: torch.nn.Module, allow_missing: bool = False):
        """Compare the weight files' headers with `model` (built on meta) before loading; raise one sentence.

        Returns the mismatch that is allowed (parts of another task's model this class does not have; with allow_missing, tensors
        missing from the file), or None when everything fits or only transformers' loading report can tell.
        """
        from graphsurgeon.capture.weights_check import compare_headers
        from graphsurgeon.capture.weights_values import header_dtypes

        mismatch = compare_headers(model, self.file_shapes, header_dtypes(weight_files(self.weights_dir)))
        allowed = self._judge(mismatch, allow_missing)
        if mismatch is not None and mismatch.dtypes.wrong:
            raise SourceError(mismatch.dtypes.sentence(self.name, self.weights_dir))
        self._dtype_note = mismatch.dtypes.note() if mismatch is not None else ""
        return allowed

    def _judge(self, mismatch, allow_missing: bool):
        if mismatch is None:
            return None
        if mismatch and not (allow_missing and mismatch.only_missing()):
            raise SourceError(mismatch.sentence(self.name, self.weights_dir))
        return mismatch if (mismatch or mismatch.other_parts) else None

    def _outcome(self, model, allowed) -> tuple[str, str]:
        """(kind, note) of the weights a CPU build gives: "random", "real" or "partial" (`allowed` missing tensors)."""
        if self.weights_dir is None:
            return "random", self.note
        extra = [self._dtype_note]
        if allowed is not None:
            extra += [allowed.parts_note(type(model).__name__), allowed.missing and allowed.missing_note()]
        kind = "partial" if allowed is not None and allowed.missing else "real"
        return kind, self.note + "".join(f"; {t}" for t in extra if t)

    @property
    def file_shapes(self) -> dict:
        from graphsurgeon.capture.weights_check import file_shapes

        if self._shapes is None:
            self._shapes = file_shapes(weight_files(self.weights_dir)) if self.weights_dir else {}
        return self._shapes

    def build(self, device: str = "cpu", attn_implementation: str = "sdpa", allow_missing: bool = False,
              allow_nonfinite: bool = False) -> torch.nn.Module:
        """The model on `device` ("meta": architecture only), with real weights when there are any.

        The weight files are checked against the config first (headers only); a mismatch raises one sentence,
        unless allow_missing and the file only lacks tensors (those are initialised randomly, and the model's
        `_graphsurgeon_note` says so). Weights holding NaN or inf are refused unless allow_nonfinite (the note then
        says so).
        """
        config = self.hf_config(attn_implementation)
        cls = self.model_class()
        return self._build(cls, config, device, attn_implementation, allow_missing, allow_nonfinite)

    def _build(self, cls, config, device: str, attn_implementation: str, allow_missing: bool,
               allow_nonfinite: bool) -> torch.nn.Module:
        import torch

        meta_model = self._construct(cls, config, "meta", attn_implementation)
        allowed = self.check_weights(meta_model, allow_missing) if self.weights_dir is not None else None
        if device == "meta":
            meta_model._graphsurgeon_weights, meta_model._graphsurgeon_note = "meta", "architecture only (meta device)"
            meta_model._graphsurgeon_later = self._outcome(meta_model, allowed)  # what a build with weights will give
            return meta_model.eval()
        if self.weights_dir is None:
            torch.manual_seed(0)  # random weights are the same on every run
            model = self._construct(cls, config, device, attn_implementation)
            model._graphsurgeon_weights, model._graphsurgeon_note = self._outcome(model, None)
            return model.eval()
        model = self._load(cls, config, attn_implementation, allow_missing, allowed)
        self._judge_values(model, allow_nonfinite)
        return model.eval()

    def _load(self, cls, config, attn_implementation: str, allow_missing: bool, allowed):
        """from_pretrained with transformers' own loading report judged like the header check."""
        import torch

        torch.manual_seed(0)  # tensors --allow-missing-weights leaves random are the same on every run
        try:
            model, info = cls.from_pretrained(self.weights_dir, config=config, local_files_only=True,
                                              attn_implementation=attn_implementation, use_safetensors=True,
                                              output_loading_info=True, ignore_mismatched_sizes=True)
        except SourceError:
            raise
        except Exception as err:  # noqa: BLE001 - any other loader failure becomes one sentence
            raise SourceError(f"{self.name}: could not load the weights in {self.weights_dir} ({_first_line(err)}).") from err
        from graphsurgeon.capture.weights_check import from_loading_info

        reported = self._judge(from_loading_info(model, info, self.file_shapes), allow_missing)
        allowed = reported if reported is not None else allowed
        model._graphsurgeon_weights, model._graphsurgeon_note = self._outcome(model, allowed)
        return model

    def _judge_values(self, model, allow_nonfinite: bool) -> None:
        """NaN / inf in the loaded weights: refused in one sentence, or (allowed) said in the weights note.

        One scan of the model's tensors right after the load (weights_values.nonfinite), on this thread: it reads the
        pages the load mapped, so the first forward finds them mapped (benchmarks/weights_scan.py; a scan of the files
        on worker threads during the load cost more CPU and more wall time, warm or cold, on every machine measured).
        """
        from graphsurgeon.capture.weights_values import NONFINITE_NOTE, nonfinite, nonfinite_text

        if os.environ.get("GRAPHSURGEON_NO_SCAN") == "1":  # benchmarks/weights_scan.py: the load without the check
            return
        bad = nonfinite([*model.named_parameters(), *model.named_buffers()])
        if not bad:
            return
        if not allow_nonfinite:
            raise SourceError(f"{self.name}: the weights in {self.weights_dir} are not all finite "
                              f"({nonfinite_text(bad)}), so the model would compute NaN; give weights saved before "
                              "training diverged, or pass --allow-nonfinite to load them anyway.")
        model._graphsurgeon_note += f"; {NONFINITE_NOTE} ({nonfinite_text(bad)}; kept by --allow-nonfinite)"


def _special_floats(value):
    """config.json's {"__float__": "Infinity"} (how transformers writes inf/nan) as the float itself."""
    if isinstance(value, dict):
        if set(value) == {"__float__"} and value["__float__"] in ("Infinity", "-Infinity", "NaN"):
            return float(value["__float__"].replace("Infinity", "inf"))
        return {k: _special_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_special_floats(v) for v in value]
    return value


def _has_nan(value) -> bool:
    if isinstance(value, float):
        return value != value
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return isinstance(value, list) and any(_has_nan(v) for v in value)


def _memory_reason(config: dict, err: BaseException) -> str:
    """'' or why building the model ran out of memory, naming the config's largest sizes (not torch's
    "[enforce fail at alloc_cpu.cpp:127]")."""
    text = str(err)
    if not (isinstance(err, MemoryError) or "not enough memory" in text or "DefaultCPUAllocator" in text):
        return ""
    asked = re.search(r"allocate (\d+) bytes", text)
    size = f" (one of its tensors needs {int(asked.group(1)) / 2**30:,.0f} GB)" if asked else ""
    big = sorted(((v, k) for k, v in config.items() if type(v) is int and v >= 100_000), reverse=True)[:3]
    sizes = f"; check {', '.join(f'{k} = {v}' for v, k in big)} in config.json" if big else ""
    return (f"the model that config.json describes does not fit in this machine's memory{size}{sizes}, or pass --meta "
            "for the architecture only")


def _config_reason(config: dict, err: BaseException) -> str:
    """Why the model rejects its config, in its own words; a negative tensor size is named by the config key holding it."""
    reason = _first_line(err)
    m = re.search(r"negative dimension (-\d+)", str(err))
    keys = [k for k, v in config.items() if m and isinstance(v, int) and not isinstance(v, bool) and v == int(m.group(1))]
    if keys:
        return f"{' / '.join(f'{k} = {m.group(1)}' for k in keys)} is negative ({reason})"
    if isinstance(err, ZeroDivisionError):  # a count or size of 0 divides something: name it (ids may well be 0)
        zeros = [k for k, v in config.items() if type(v) is int and v == 0 and not k.endswith("_id")]
        if zeros:
            return f"{' / '.join(f'{k} = 0' for k in zeros)} divides a size ({reason})"
    return reason


def _first_line(err: BaseException) -> str:
    """The error's own words, one line: its first line (and the next when the first only introduces it)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    if len(text) > 160 and ". " in text:  # a long explanation: its first sentence
        text = text[:text.index(". ")]
    return text[:300].rstrip(".")


def resolve(source: str, download: bool = True) -> ModelRecipe:
    """Turn what the user typed into a ModelRecipe, or raise a SourceError that says what to do.

    download=False: a hub id not in the local cache raises instead of downloading (a look-up that must stay quick).
    """
    if not source.strip():
        raise SourceError(f"the model name is empty; give a preset ({', '.join(preset_names())}) or a folder with "
                          "config.json.")
    if is_preset(source):
        return _from_preset(source)
    path = Path(os.path.expanduser(source))
    if path.exists():
        return _from_folder(path, source)
    bare = source.rstrip("/\\")
    if bare != source and is_preset(bare):  # before: sent to the hub cache, then to a download command
        raise SourceError(f"{source}: no such folder; for the preset write {bare} (without the slash).")
    if source.startswith((".", "/", "~")) or os.sep in source.rstrip(os.sep) and source.count("/") != 1:
        raise SourceError(f"{source}: no such file or folder; give a preset ({', '.join(preset_names())}) or a folder with config.json.")
    return _from_hub(source, download)


def _from_preset(name: str) -> ModelRecipe:
    preset = load_preset(name)
    from graphsurgeon.capture.hub import cached_snapshot

    cached = cached_snapshot(preset.hub_id) if preset.hub_id else None
    shapes = _weights_in(cached, name) if cached is not None else None
    if shapes is not None:
        return ModelRecipe(name, preset.config, cached, f"real weights from the local Hugging Face cache ({cached})",
                           shapes)
    why = "not in the local Hugging Face cache" if preset.hub_id else "a preset without published weights"
    return ModelRecipe(name, preset.config, None, f"random weights ({name} is {why})")


def _from_folder(path: Path, name: str) -> ModelRecipe:
    if not path.is_dir():
        raise SourceError(f"{name} is a file; give the folder that holds config.json and *.safetensors.")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SourceError(f"{name} has no config.json; give a folder written by save_pretrained (config.json + *.safetensors).")
    try:
        config = read_json(config_file, max_bytes=MAX_CONFIG_BYTES, max_depth=MAX_CONFIG_DEPTH, what="a config.json")
    except DataError as err:
        why = f"is not valid JSON ({err})" if err.why in ("syntax", "encoding") else f"cannot be read: {err}"
        raise SourceError(f"{config_file} {why}; fix or regenerate it with save_pretrained.") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise SourceError(f"{config_file} has no model_type; it should be a Hugging Face config.json.")
    if (path / "surgery.json").is_file() and (path / "model.py").is_file():
        try:
            original = read_json(path / "surgery.json", max_bytes=MAX_CONFIG_BYTES).get("source") or "MODEL"
        except (OSError, ValueError, AttributeError):
            original = "MODEL"
        raise SourceError(f"{name} is a graphsurgeon export, whose model.safetensors holds the LoRA weights too; open "
                          "a run's merged folder (python train.py --merge-only runs/NAME there writes runs/NAME/merged), or replay it on the original model: "
                          f"graphsurgeon lora {original} --recipe {path / 'surgery.json'}.")
    shapes = _weights_in(path, name)
    if shapes is None:
        return ModelRecipe(name, config, None, f"random weights ({name} has no model.safetensors)")
    return ModelRecipe(name, config, path, f"real weights from {path}", shapes)


def _weights_in(path: Path, name: str) -> dict | None:
    """Tensor name -> shape of the weights transformers would load from `path` (None: no weights there)."""
    try:
        files = weight_files(path)
    except ValueError as err:
        raise SourceError(f"{name}: {err}; save the model again with save_pretrained.") from None
    if not files:
        others = sorted(p.name for p in path.glob("*.safetensors"))
        if others:
            raise SourceError(f"{name} has {', '.join(others[:3])} but no model.safetensors (or "
                              "model.safetensors.index.json), the file transformers loads; rename the weights file "
                              "to model.safetensors or save the model again with save_pretrained.")
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            raise SourceError(f"{name} holds only pickle weights (*.bin/*.pt), which graphsurgeon never loads; "
                              "convert them to safetensors (save_pretrained(..., safe_serialization=True)).")
        return None
    shapes: dict = {}
    for f in files:
        shapes.update(check_safetensors(f))
    return shapes


def check_safetensors(file: Path) -> dict:
    """Tensor name -> shape of a complete safetensors file; a SourceError naming the file if it is not one."""
    from safetensors import safe_open

    try:
        shapes = read_header(file)
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except PermissionError:
        raise SourceError(f"{file} cannot be read: permission denied; give your user read access to it (chmod u+r) "
                          "or copy it to a folder of yours.") from None
    except Exception as err:  # noqa: BLE001
        raise SourceError(f"{file} is corrupt or truncated ({_first_line(err)}); copy or save it again.") from err
    return shapes


def _from_hub(hub_id: str, may_download: bool) -> ModelRecipe:
    """A hub id: its snapshot in the local cache, else downloaded (capture/hub.py)."""
    from graphsurgeon.capture.hub import cached_snapshot, download

    folder = cached_snapshot(hub_id)
    if folder is None:
        if not may_download:
            raise SourceError(f"{hub_id} is not in the local Hugging Face cache.")
        folder = download(hub_id)
    return _from_folder(folder, hub_id)


def _auto_maps(model_type: str, arch: str) -> bool:
    """True when transformers' own auto mappings serve `model_type` with the class `arch` (sarvam_mla's config is
    no DeepseekV3Config, yet AutoModelForCausalLM builds DeepseekV3ForCausalLM for it)."""
    from transformers.models.auto import modeling_auto

    return any(isinstance(m, dict) and m.get(model_type) == arch
               for name, m in vars(modeling_auto).items() if name.endswith("_MAPPING_NAMES"))
