"""Export: a folder that runs without graphsurgeon (model.py, safetensors, PEFT adapter, train.py, recipe, README)."""

from __future__ import annotations

import errno
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import save_file

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.export.destination import Claim, DestinationError, claim
from graphsurgeon.export.adapter import adapter_notes, write_adapter
from graphsurgeon.export.modelpy import TEMPLATES, generation_text, model_source, saved_tensors
from graphsurgeon.export.second_config import SecondConfigRefused, size_fields
from graphsurgeon.export.verify import KVCacheRefused, self_check
from graphsurgeon.signals import terminations_raise
from graphsurgeon.validate import validate_full


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "vocab.txt", "tokenizer.model", "generation_config.json")  # the source's, copied on to merged/

# the training scripts, copied from templates/ as they are (lora_math: the adapter and merge maths graphsurgeon uses too)
SCRIPTS = ("train.py", "train_args.py", "train_data.py", "train_save.py", "lora_math.py")

# Everything an export folder may hold that graphsurgeon or the folder's own scripts wrote: --force replaces such a
# folder whole, so anything else in it (the user's data, notes) makes --force refuse rather than delete it.
EXPORT_FILES = ("model.py", "model.safetensors", "adapter_config.json", "adapter_model.safetensors", *SCRIPTS,
                "config.json", "surgery.json", "README.md", *TOKENIZER_FILES)
TRAINING_PRODUCTS = ("merged", "classifier_head.safetensors", "__pycache__", "model.safetensors.tmp",
                     "classifier_head.safetensors.tmp")


class ExportError(GraphsurgeonError):
    """The export was refused (folder not empty, invalid graph)."""


@dataclass
class ExportResult:
    folder: Path  # the written folder
    files: list[str] = field(default_factory=list)  # file names written
    seconds: float = 0.0  # wall time of the export
    notes: list[str] = field(default_factory=list)  # what the folder cannot do (e.g. blocks PEFT cannot hold)
    weights: str = "real"  # what model.safetensors holds: "real", "random" or "partial" (some tensors random)
    weights_note: str = ""  # one line on where those weights came from
    removed: list[str] = field(default_factory=list)  # leftovers of stopped exports to this folder, removed
    check: str = ""  # what the self-check checked ("model.py checked against the graph: 2 lengths, …")


def _validate(cm) -> None:
    problems = validate_full(cm)
    if problems:
        listed = "; ".join(str(p) for p in problems[:10])
        raise ExportError(f"the graph fails validation, fix it before exporting: {listed}")


def weights_to_export(cm) -> tuple[str, str]:
    """(kind, note) of the weights an export of `cm` writes: a meta capture is given its weights first."""
    if cm.is_meta:
        return cm.materializes_to or "random", cm.materialize_note or cm.weights_note
    return cm.weights, cm.weights_note


def check_out_folder(out_dir, *, force: bool = False, source: str | None = None) -> None:
    """Refuse an export folder before anything is done: not empty (without force), not an earlier export (with
    force), or the model's own folder (`source`)."""
    out = Path(out_dir)
    src = Path(source) if source else None
    if src is not None and src.is_dir() and (out.resolve() == src.resolve() or out.resolve() in src.resolve().parents):
        raise ExportError(f"{out} is the model's own folder or holds it; export to another folder, the model stays as "
                          "it is.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ExportError(f"{out} exists and is not empty; choose another folder or pass --force to replace it.")
        if not (out / "surgery.json").is_file():  # --force replaces an earlier export, never other files
            held = ", ".join(sorted(p.name for p in out.iterdir())[:3]) if out.is_dir() else "a file"
            raise ExportError(f"--force only replaces an earlier graphsurgeon export (a folder with surgery.json), and "
                              f"{out} holds {held}; choose another folder.")
        foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                         if p.name not in EXPORT_FILES + TRAINING_PRODUCTS)
        if foreign:  # the user's own files in an earlier export: never deleted
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise ExportError(f"--force would replace the earlier export in {out}, which also holds files graphsurgeon "
                              f"did not write ({', '.join(foreign[:3])}{more}); move them out of it or choose another "
                              "folder.")


def check_export(cm, out_dir, *, force: bool = False, random_weights: bool = False) -> None:
    """Refuse an export before anything is loaded or written: the folder (check_out_folder), random weights not
    asked for."""
    check_out_folder(out_dir, force=force, source=cm.source_name)
    kind, note = weights_to_export(cm)
    if kind == "random" and not random_weights:
        raise ExportError(f"{note or 'random weights'}: the export would hold weights that were never trained; pass "
                          "--random-weights to export them anyway (e.g. to try the pipeline), or give a folder with "
                          "model.safetensors.")


def export_folder(cm, out_dir, *, force: bool = False, random_weights: bool = False, progress=None) -> ExportResult:
    """Write the export folder `out_dir` atomically (temp folder next to it, renamed at the end).

    Random weights (a config-only source, a preset without cached weights) are refused unless random_weights:
    such a folder runs, but it is no trained model. README.md and surgery.json say which weights it holds.
    An OS error (unwritable place, full disk) or SIGINT / SIGTERM / SIGHUP leaves nothing behind; so does an
    exception `progress` raises (called with one line of text before each step: the editor's Cancel).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    step = progress or (lambda text: None)
    with terminations_raise():
        try:
            with claim(out) as dest:  # one export at a time to `out`; leftovers of a stopped one removed
                step(f"exporting to {out}: checking the destination and the edits")
                check_export(cm, out, force=force, random_weights=random_weights)
                step(f"exporting to {out}: loading the weights")
                cm.materialize()
                step(f"exporting to {out}: validating shapes")
                _validate(cm)
                check = _write_atomically(cm, dest, lambda: check_out_folder(out, force=force, source=cm.source_name),
                                          step)
        except DestinationError as err:
            raise ExportError(str(err)) from None
        except OSError as err:
            raise ExportError(_os_sentence(out, err)) from None
        except Exception as err:  # noqa: BLE001 - safetensors' own write error (a full disk) is no OSError
            if type(err).__name__ != "SafetensorError":
                raise
            raise ExportError(_os_sentence(out, err)) from None
    return ExportResult(out, sorted(p.name for p in out.iterdir()), time.perf_counter() - start, adapter_notes(cm),
                        cm.weights, cm.weights_note, dest.removed, check)


def _os_sentence(out: Path, err: BaseException) -> str:
    text = str(err)
    if isinstance(err, OSError):
        what, full = err.strerror or text, err.errno == errno.ENOSPC
    else:
        full = "No space left" in text or "StorageFull" in text
        what = "No space left on device" if full else (text.strip().splitlines() or [type(err).__name__])[0]
    todo = "free some space or choose another disk" if full else "choose a folder you can write to"
    return f"cannot write the export to {out}: {what}; nothing was written, {todo}."


def _write_atomically(cm, dest: Claim, still_free, step) -> str:
    """Write into a temp folder beside the destination, run model.py against the graph there (export/verify.py),
    then move it into place (`still_free`: the destination may still be replaced); anything stopped or refused
    removes the temp folder. Returns what the self-check checked."""
    while True:
        tmp = dest.temp_folder()
        try:
            with self_check(cm, tmp) as checked:
                step(f"exporting to {dest.out}: writing model.py, the weights, the adapter and train.py")
                _write(cm, tmp, dest.out)
                step(f"exporting to {dest.out}: self-check, running model.py against the graph")
            step(f"exporting to {dest.out}: moving the folder into place")
            dest.move_into_place(tmp, check=still_free)
            off = f"; generate() keeps no KV cache: with one, {cm.kv_cache_off}" if cm.kv_cache_off else ""
            return checked.text + off + _fixed_text(cm)
        except KVCacheRefused as err:  # once: model.py again, generating without a cache (and checked again)
            shutil.rmtree(tmp, ignore_errors=True)
            if cm.kv_cache_off:
                raise
            cm.kv_cache_off = str(err)
            cm._codegen = None
        except SecondConfigRefused as err:  # model.py again: the fields it names pinned, else every size literal
            shutil.rmtree(tmp, ignore_errors=True)
            if cm.sizes_literal:
                raise
            if err.pin is None:
                from graphsurgeon.export.codegen import generate

                cm.sizes_fixed_fields = size_fields(cm.config, {**generate(cm).model.config.used,
                                                                 **cm.sizes_fixed_fields})
                cm.sizes_literal = True
            else:
                cm.sizes_fixed_fields = dict(err.pin)
            cm.sizes_fixed = str(err)
            cm._codegen = None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _fixed_text(cm) -> str:
    """What the export's line says of sizes model.py's Config pins ("" when none)."""
    if not cm.sizes_fixed:
        return ""
    what = "every size" if cm.sizes_literal else ", ".join(cm.sizes_fixed_fields)
    return f"; fixed at this config (Config refuses others): {what} — {cm.sizes_fixed}"


def _weights_text(cm) -> str:
    """The README's line on what model.safetensors holds."""
    if cm.weights == "random":
        return (f"**Weights: random.** `model.safetensors` holds {cm.weights_note or 'random weights'}, not a trained "
                "model: its outputs mean nothing until you train it or export a model with real weights "
                "(exported with --random-weights).")
    if cm.weights == "partial":
        return (f"**Weights: real, partly random.** {cm.weights_note} (exported with --allow-missing-weights): train "
                "before trusting its outputs.")
    return f"**Weights:** {cm.weights_note or 'the weights of the captured model'}."


def _write(cm, folder: Path, final: Path | None = None) -> None:
    """The export's files into `folder`, which will be moved to `final` (default: stays where it is)."""
    (folder / "model.py").write_text(model_source(cm), encoding="utf-8")
    save_file({k: v.cpu() for k, v in saved_tensors(cm).items()}, str(folder / "model.safetensors"))
    if cm.loras:
        write_adapter(cm, folder, final or folder)
    for script in SCRIPTS:
        shutil.copy(TEMPLATES / script, folder / script)
    source = Path(cm.source_name)
    if source.is_dir():  # the tokenizer travels with the model so train.py can read text files
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy(source / name, folder / name)
    if cm.config:
        (folder / "config.json").write_text(json.dumps(cm.config, indent=2, default=str), encoding="utf-8")
    (folder / "surgery.json").write_text(json.dumps(
        {"version": 1, "model_class": cm.model_class, "source": cm.source_name,
         "weights": {"kind": cm.weights, "note": cm.weights_note},
         "loras": [b.as_dict() for b in cm.loras.values()]}, indent=2), encoding="utf-8")
    readme = (TEMPLATES / "README.md").read_text(encoding="utf-8").format(model_class=cm.model_class, n=len(cm.loras),
                                                         weights=_weights_text(cm))
    generating = generation_text(cm)
    if generating:
        readme += "\n## Generating text\n\n" + generating + "\n"
    notes = adapter_notes(cm)
    if notes:
        readme += "\n## Not in the PEFT adapter\n\n" + "\n".join(f"* {n}" for n in notes) + "\n"
    (folder / "README.md").write_text(readme, encoding="utf-8")


__all__ = ["ExportError", "ExportResult", "check_export", "check_out_folder", "export_folder", "weights_to_export"]
