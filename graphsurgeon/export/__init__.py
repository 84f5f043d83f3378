"""Export: a folder that runs without graphsurgeon (model.py, safetensors, PEFT adapter, train.py, recipe, README)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import save_file

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.export.adapter import adapter_notes, write_adapter
from graphsurgeon.export.modelpy import TEMPLATES, export_tensors, model_source
from graphsurgeon.validate import validate_full


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "vocab.txt", "tokenizer.model")


class ExportError(GraphsurgeonError):
    """The export was refused (folder not empty, invalid graph)."""


@dataclass
class ExportResult:
    folder: Path  # the written folder
    files: list[str] = field(default_factory=list)  # file names written
    seconds: float = 0.0  # wall time of the export
    notes: list[str] = field(default_factory=list)  # what the folder cannot do (e.g. blocks PEFT cannot hold)


def _validate(cm) -> None:
    problems = validate_full(cm)
    if problems:
        listed = "; ".join(str(p) for p in problems[:10])
        raise ExportError(f"the graph fails validation, fix it before exporting: {listed}")


def export_folder(cm, out_dir, *, force: bool = False) -> ExportResult:
    """Write the export folder `out_dir` atomically (temp folder next to it, renamed at the end)."""
    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty; choose another folder or pass --force to replace it.")
    cm.materialize()
    _validate(cm)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(cm, tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, sorted(p.name for p in out.iterdir()), time.perf_counter() - start, adapter_notes(cm))


def _write(cm, folder: Path) -> None:
    (folder / "model.py").write_text(model_source(cm))
    tensors, _, _ = export_tensors(cm)
    save_file({k: v.cpu() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    if cm.loras:
        write_adapter(cm, folder)
    shutil.copy(TEMPLATES / "train.py", folder / "train.py")
    source = Path(cm.source_name)
    if source.is_dir():  # the tokenizer travels with the model so train.py can read text files
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy(source / name, folder / name)
    if cm.config:
        (folder / "config.json").write_text(json.dumps(cm.config, indent=2, default=str))
    (folder / "surgery.json").write_text(json.dumps(
        {"version": 1, "model_class": cm.model_class, "source": cm.source_name,
         "loras": [b.as_dict() for b in cm.loras.values()]}, indent=2))
    readme = (TEMPLATES / "README.md").read_text().format(model_class=cm.model_class, n=len(cm.loras))
    notes = adapter_notes(cm)
    if notes:
        readme += "\n## Not in the PEFT adapter\n\n" + "\n".join(f"* {n}" for n in notes) + "\n"
    (folder / "README.md").write_text(readme)


__all__ = ["ExportError", "ExportResult", "export_folder"]
