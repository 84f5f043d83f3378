"""The run folder of train.py (written by graphsurgeon; runs without it): what a run saves, how it is read back.

    runs/<name>/adapter_config.json, adapter_model.safetensors   the PEFT adapter (trained heads in modules_to_save)
    runs/<name>/trainable.safetensors     every trained tensor under model.py's names (LoRA, heads)
    runs/<name>/classifier_head.safetensors  the head train.py adds to a model without one
    runs/<name>/optimizer.safetensors     AdamW's state per trained tensor (<name>.exp_avg, .exp_avg_sq, .step)
    runs/<name>/trainer_state.json        step, schedule, the export it was trained from
    runs/<name>/args.json, metrics.jsonl  the exact arguments; one line per logged step and evaluation
    runs/<name>/merged/                   with --merge / --merge-only: a Hugging Face folder, LoRA folded in

A save writes a temporary folder beside the run and renames it into place, so a run folder is always whole.
The export folder itself is never written to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile

import torch
from safetensors.torch import load_file, save_file

import lora_math
import model as exported
from train_data import HERE, fail

SOURCE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "generation_config.json",
)
RUN_FILES = ("trainable.safetensors", "optimizer.safetensors", "trainer_state.json", "args.json")


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def export_fingerprint() -> str:
    """A short hash of this export (surgery.json and model.safetensors' header): a run belongs to one export."""
    digest = hashlib.sha256()
    with open(os.path.join(HERE, "surgery.json"), "rb") as f:
        digest.update(f.read())
    with open(os.path.join(HERE, "model.safetensors"), "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        digest.update(f.read(min(size, 1 << 26)))
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- the PEFT adapter


def _recipe() -> dict:
    return _read_json(os.path.join(HERE, "surgery.json"))


def lora_path(block: dict) -> str:
    t = block["target"]
    return f"{t['module']}.{t['role']}" if t["columns"] else t["module"]


def _block(params: dict, block: dict) -> dict:
    """A block of surgery.json as lora_math reads it: its trained A, B, columns and scaling."""
    path = lora_path(block)
    return {
        "A": params[path + ".lora_A.weight"],
        "B": params[path + ".lora_B.weight"],
        "columns": block["target"]["columns"],
        "scaling": exported.LORAS[path]["scaling"],
    }


def peft_adapter(model, heads: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """The PEFT adapter: one LoRA per module (column sets of a fused module stacked into one exact adapter), the
    trained heads under base_model.model.<head>.* as PEFT's modules_to_save; the export's adapter_config.json gives
    task_type, base model, revision and PEFT version."""
    groups: dict[str, list] = {}
    for block in _recipe()["loras"]:
        if block.get("mergeable", True):  # a LoRA added onto another value is no ΔW of a weight: not for PEFT
            groups.setdefault(block["target"]["module"], []).append(block)
    params = dict(model.named_parameters())
    tensors, modules, kind, dropout = {}, {}, "linear", 0.0
    for module, blocks in groups.items():
        kind, dropout = blocks[0]["target"]["kind"], blocks[0]["config"]["dropout"]
        w = params[module + ".weight"]
        a, b, scaling = lora_math.peft_tensors(
            [_block(params, blk) for blk in blocks], w.shape[1] if kind == "conv1d" else w.shape[0]
        )
        a, b = lora_math.peft_layout(a, b, w)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(w.dtype)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(w.dtype)
        modules[module] = (a.shape[0], scaling)
    if not tensors:
        return {}, {}
    for head in heads:
        for name, t in model.get_submodule(head).state_dict().items():
            tensors[f"base_model.model.{head}.{name}"] = t.detach().cpu().contiguous()
    known = os.path.join(HERE, "adapter_config.json")
    base = _read_json(known) if os.path.exists(known) else {}
    config = lora_math.peft_config(
        modules,
        dropout,
        kind == "conv1d",
        base.get("base_model_name_or_path"),
        task=base.get("task_type"),
        modules_to_save=heads,
        revision=base.get("revision"),
        peft_version=base.get("peft_version"),
    )
    return tensors, config


# ----------------------------------------------------------------------------- the run folder


def trainable_tensors(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        n: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu().contiguous() for n, t in named.items()
    }


def optimizer_tensors(opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """AdamW's state as flat tensors <param name>.<state key> (gathered under FSDP)."""
    out = {}
    for p, state in opt.state.items():
        for key, value in state.items():
            if torch.is_tensor(value):
                value = value.full_tensor() if hasattr(value, "full_tensor") else value
                out[f"{names[id(p)]}.{key}"] = value.detach().cpu().contiguous()
    return out


def load_optimizer(opt: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter], tensors: dict) -> None:
    """Put the saved AdamW state back onto the parameters it belongs to (same names, same order)."""
    state = opt.state_dict()
    order = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    for name, p in params.items():
        keys = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.rpartition(".")[0] == name}
        if keys:
            state["state"][order[id(p)]] = {k: v.to(p.device) if k != "step" else v for k, v in keys.items()}
    opt.load_state_dict(state)


def check_writable(folder: str) -> None:
    """Stop before training when the run folder's place cannot be written (a read-only export, say)."""
    parent = os.path.abspath(folder)
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:  # the nearest folder that exists
        parent = os.path.dirname(parent)
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as err:
        fail(
            f"cannot write the run folder {folder} ({err.strerror or err}); pass --runs-dir with a folder you can "
            "write to (the export itself is never written to)."
        )


def write_run(folder: str, files: dict) -> None:
    """Write the run folder whole: `files` (name -> tensors dict, JSON-able data, list of JSON lines, or a callable
    writing into a path) into a temporary folder beside it, renamed into place; the old one removed after."""
    parent, name = os.path.split(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp", dir=parent)
    old = os.path.join(parent, f".{name}.old{os.getpid()}")
    try:
        keep = os.path.join(folder, "merged")
        if os.path.isdir(keep) and "merged" not in files:  # a merge of an earlier save stays with the run
            shutil.copytree(keep, os.path.join(tmp, "merged"))
        for file, content in files.items():
            path = os.path.join(tmp, file)
            if callable(content):
                content(path)
            elif file.endswith(".safetensors"):
                save_file(content, path, metadata={"format": "pt"})
            elif file.endswith(".jsonl"):
                with open(path, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(row) + "\n" for row in content)
            else:
                _write_json(path, content)
        if os.path.exists(folder):
            os.rename(folder, old)
        os.rename(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(old) and not os.path.exists(folder):
            os.rename(old, folder)
        fail(
            f"cannot write the run folder {folder} ({err.strerror or err}); free some space or pass --runs-dir with "
            "another folder."
        )


def run_folder(name: str, runs_dir: str) -> str:
    """A run named on the command line: the folder as given, else the run of that name under --runs-dir (as
    --run-name names it), so `--resume a` continues `--run-name a`."""
    under = os.path.join(runs_dir, name)
    return os.path.abspath(under if not os.path.isdir(name) and os.path.isdir(under) else name)


def read_run(folder: str, *, for_resume: bool) -> dict:
    """The saved run: {"state", "args", "trainable", "optimizer", "metrics"}; one sentence when it is not a whole
    run of this export."""
    if not os.path.isdir(folder):
        fail(f"{folder} is not a run folder; give a folder train.py wrote under runs/.")
    need = RUN_FILES if for_resume else ("trainable.safetensors", "trainer_state.json")
    missing = [f for f in need if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        fail(
            f"{folder} has no {missing[0]}, so it cannot be {'resumed' if for_resume else 'merged'}; copy the whole run "
            "folder or start a new run."
        )
    try:
        state = _read_json(os.path.join(folder, "trainer_state.json"))
        if state.get("export") != export_fingerprint():
            fail(
                f"{folder} was trained from another export (its model or surgery differ from {HERE}); use it with "
                "the train.py of the export it came from."
            )
        run = {"state": state, "trainable": load_file(os.path.join(folder, "trainable.safetensors"))}
        if for_resume:
            run["args"] = _read_json(os.path.join(folder, "args.json"))
            run["optimizer"] = load_file(os.path.join(folder, "optimizer.safetensors"))
            metrics = os.path.join(folder, "metrics.jsonl")
            with open(metrics, encoding="utf-8") if os.path.exists(metrics) else open(os.devnull) as f:
                run["metrics"] = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, KeyError, TypeError) as err:
        fail(f"{folder} is damaged ({str(err).splitlines()[0][:120]}); start a new run.")
    return run


def load_trainable(model: torch.nn.Module, head, tensors: dict) -> None:
    """Copy a run's trained tensors into the model (and the added head, keys head.*)."""
    params = dict(model.named_parameters())
    if head is not None:
        params.update({f"head.{k}": v for k, v in head.named_parameters()})
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        fail(f"the run holds {unknown[0]}, which this export's model.py does not have; use the export it came from.")
    with torch.no_grad():
        for name, t in tensors.items():
            if name.startswith("head.classifier.") and tuple(params[name].shape) != tuple(t.shape):
                fail(
                    f"the run's classification head has {t.shape[0]} labels; pass --num-labels {t.shape[0]} or start "
                    "a new run."
                )
            if tuple(params[name].shape) != tuple(t.shape):
                fail(
                    f"the run's {name} has shape {list(t.shape)}, the model's {list(params[name].shape)}; pass the "
                    "--num-labels the run was trained with, or start a new run."
                )
            params[name].copy_(t)


def plain_copy(model: torch.nn.Module, trained: dict) -> torch.nn.Module:
    """An unsharded CPU copy of the export with the run's trained tensors (FSDP: saving and merging need one)."""
    copy = exported.load_model(HERE, device="cpu")
    load_trainable(copy, None, {k: v for k, v in trained.items() if not k.startswith("head.")})
    return copy


# ----------------------------------------------------------------------------- merged/


def _hf_keys(config: dict) -> set[str] | None:
    """The keys transformers' from_pretrained expects for this config (persistent state only), or None without
    transformers (then every tensor is written)."""
    try:
        import transformers

        cls = getattr(transformers, (config.get("architectures") or [""])[0], None)
        if cls is None:
            return None
        with torch.device("meta"):
            model = cls(transformers.AutoConfig.for_model(**config))
        return set(model.state_dict())
    except Exception:  # noqa: BLE001 - no transformers, or a class it cannot build here: keep every tensor
        return None


def merge(model, folder: str, card: dict) -> str:
    """Write `folder`/merged/: config.json, model.safetensors with every LoRA folded into its base weight (only the
    keys from_pretrained expects), the source's tokenizer and generation_config.json, and a model card."""
    tied = getattr(exported, "TIED", {})
    base = {
        k: v.detach().cpu().clone().contiguous()
        for k, v in model.state_dict().items()
        if k not in tied and ".lora_A." not in k and ".lora_B." not in k
    }
    recipe = _recipe()
    params = dict(model.named_parameters())
    unmergeable = [b["path"] for b in recipe["loras"] if not b.get("mergeable", True)]
    if unmergeable:
        fail(
            f"{', '.join(unmergeable)} add their LoRA onto another value than their projection's output, so they "
            "cannot be folded into a weight; nothing was merged (use model.py as it is)."
        )
    for block in recipe["loras"]:
        t = block["target"]
        try:
            base[t["module"] + ".weight"] = lora_math.fold(
                base[t["module"] + ".weight"], _block(params, block), fan_in_fan_out=t["kind"] == "conv1d"
            )
        except ValueError:
            fail(f"the LoRA update of {lora_path(block)} has non-finite values; nothing was merged.")
    known = os.path.join(HERE, "config.json")  # none when the source was a plain nn.Module: model.py's own keys
    config = _read_json(known) if os.path.exists(known) else {}
    expected = _hf_keys(config) if config else None
    if expected is not None:
        base = {k: v for k, v in base.items() if k in expected}

    def write(path: str) -> None:
        os.makedirs(path)
        save_file(base, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        if config:
            _write_json(os.path.join(path, "config.json"), config)
        for name in SOURCE_FILES:
            if os.path.isfile(os.path.join(HERE, name)):
                shutil.copy(os.path.join(HERE, name), os.path.join(path, name))
        with open(os.path.join(path, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(recipe, config, card))

    files = {name: os.path.join(folder, name) for name in os.listdir(folder)} if os.path.isdir(folder) else {}
    write_run(folder, {**{n: _copier(p) for n, p in files.items() if n != "merged"}, "merged": write})
    return os.path.join(folder, "merged")


def _copier(src: str):
    return lambda dst: shutil.copytree(src, dst) if os.path.isdir(src) else shutil.copy(src, dst)


def model_card(recipe: dict, config: dict, card: dict) -> str:
    """merged/README.md: the base model, the surgery (targets, r, alpha) and the training behind these weights."""
    rows = "\n".join(
        f"| `{lora_path(b)}` | {b['config'].get('r')} | {b['config'].get('alpha')} | {b['config'].get('dropout')} |"
        for b in recipe["loras"]
    )
    arch = (config.get("architectures") or [recipe.get("model_class") or "model"])[0]
    load = (
        'AutoModel...from_pretrained("merged")'
        if config
        else f'{arch}().load_state_dict(safetensors.torch.load_file("merged/model.safetensors"))'
    )
    known = os.path.join(HERE, "adapter_config.json")
    card = {"base_model": (_read_json(known) if os.path.exists(known) else {}).get("base_model_name_or_path"), **card}
    return (
        f"---\nlibrary_name: transformers\nbase_model: {card.get('base_model') or recipe.get('source')}\n"
        f"tags: [lora, graphsurgeon]\n---\n\n# {arch} with its LoRA merged\n\n"
        f"Base model: `{card.get('base_model') or recipe.get('source')}`. The LoRA layers below were added with "
        "graphsurgeon and folded into the base weights (no adapter needed): "
        f"`{load}`.\n\n| target | r | alpha | dropout |\n|---|---|---|---|\n{rows}\n\n"
        f"Training: {card.get('steps', 0)} steps of train.py (run `{card.get('run', '-')}`"
        f"{', lr ' + str(card['lr']) if card.get('lr') else ''}).\n"
    )
