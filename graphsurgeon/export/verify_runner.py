"""Runs an exported model.py for the export's self-check (export/verify.py), where graphsurgeon is not importable.

Executed as a script in a fresh process (`python -I verify_runner.py FOLDER WORK`), never imported: it needs only
torch and safetensors, as the folder does. It imports torch at once, then waits for "go" on stdin (the folder is
still being written), imports FOLDER/model.py, builds the model with `load_model(FOLDER)` and runs every case of
WORK/plan.json on WORK/inputs.safetensors — a case with `"lora": true` first loads WORK/lora.safetensors over the
LoRA weights — and, where plan.json names a `cached` case, that case again in three parts through model.py's KV
cache (as generate() feeds it; an error there goes to WORK/cached_error.txt), writes the outputs to
WORK/outputs.safetensors and prints "ready". A following "hooks N" line runs case N again with a forward hook on
every module and writes each module's first inputs and outputs to WORK/modules.safetensors (the order they ran in
to WORK/modules.json). Any failure ends the process with its traceback on stderr, and where in
model.py it happened (module path, function, line) in WORK/failure.json.
"""

import importlib.util
import json
import os
import sys

sys.modules["graphsurgeon"] = None  # the folder must run without graphsurgeon


def _tensors(value, names):
    """The tensors of a model output (a dict-like output, a tuple, or one tensor) by output name."""
    import torch

    if hasattr(value, "keys"):
        return {k: value[k] for k in value.keys() if isinstance(value[k], torch.Tensor)}
    if isinstance(value, (tuple, list)):
        return {n: v for n, v in zip(names, value) if isinstance(v, torch.Tensor)}
    return {names[0]: value}


def _leaves(value):
    """Every floating tensor in a module's output, in order."""
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _in_parts(model, inputs: dict):
    """The logits of `inputs` computed as generate() does: all tokens but the last three, then two more after the
    cached ones, then the last; each input with a sequence axis is cut there (attention_mask: up to the part's end)."""
    import torch

    seq = inputs["input_ids"].shape[1]
    cuts = [0, seq - 3, seq - 1, seq]
    cache, logits = None, []
    with torch.no_grad():
        for a, b in zip(cuts, cuts[1:]):
            part = {}
            for name, t in inputs.items():
                along = t.dim() >= 2 and t.shape[1] == seq
                part[name] = t[:, :b] if along and name == "attention_mask" else t[:, a:b] if along else t
            out = model(**part, past_key_values=cache, use_cache=True)
            cache = out["past_key_values"]
            logits.append(out["logits"])
    return torch.cat(logits, dim=1)


def main(folder: str, work: str, modules: dict | None = None) -> int:
    import torch
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(1)  # tiny inputs: one thread, no spinning against the other process on a busy machine
    if sys.stdin.readline().strip() != "go":
        return 0
    spec = importlib.util.spec_from_file_location("model", os.path.join(folder, "model.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    model = module.load_model(folder).eval()
    if modules is not None:  # for `where` if a module fails
        modules.update({id(m): name for name, m in model.named_modules() if name})
    with open(os.path.join(work, "plan.json"), encoding="utf-8") as f:
        plan = json.load(f)
    inputs = load_file(os.path.join(work, "inputs.safetensors"))
    lora_file = os.path.join(work, "lora.safetensors")
    lora = load_file(lora_file) if os.path.exists(lora_file) else {}
    params = dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted(k for k in lora if k not in params)
    if unknown:
        raise KeyError(f"model.py has no LoRA parameter {unknown[0]}")
    exported = {k: params[k].detach().clone() for k in lora}

    def run(i: int):
        case = plan["cases"][i]
        with torch.no_grad():
            for name, value in (lora if case["lora"] else exported).items():
                params[name].copy_(value)
            return model(**{n: inputs[f"{i}.{n}"] for n in case["inputs"]})

    outputs = {}
    for i in range(len(plan["cases"])):
        for name, t in _tensors(run(i), plan["outputs"]).items():
            outputs[f"{i}.{name}"] = t.detach().contiguous().clone()
    if plan.get("cached") is not None:  # the KV cache: the case's logits again, its tokens fed in three parts
        i = plan["cached"]
        run(i)  # its LoRA weights in place
        x = {n: inputs[f"{i}.{n}"] for n in plan["cases"][i]["inputs"]}
        try:
            outputs["cached.logits"] = _in_parts(model, x).contiguous()
        except Exception as err:  # noqa: BLE001 - said to the check, which writes model.py again without a cache
            with open(os.path.join(work, "cached_error.txt"), "w", encoding="utf-8") as f:
                f.write(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
    save_file(outputs, os.path.join(work, "outputs.safetensors"))
    print("ready", flush=True)
    for line in sys.stdin:  # what the check asks next, until "quit" (or the end of stdin)
        words = line.split()
        if len(words) == 2 and words[0] == "hooks":
            _record_modules(model, run, int(words[1]), work)
        elif len(words) == 2 and words[0] == "second":
            _at_second_config(module, words[1], work)
        else:
            break
        print("done", flush=True)
    return 0


def _record_modules(model, run, case: int, work: str) -> None:
    """Run `case` again with a forward hook on every module: each module's first inputs and outputs to
    WORK/modules.safetensors, the order they ran in to WORK/modules.json."""
    from safetensors.torch import save_file

    seen, order = {}, []

    def hook(name):
        def record(mod, args, kwargs, out):
            if name not in seen:
                seen[name] = {"out": _leaves(out), "in": _leaves((args, kwargs))}
                order.append(name)
        return record

    for name, mod in model.named_modules():
        if name:
            mod.register_forward_hook(hook(name), with_kwargs=True)
    run(case)
    save_file({f"{name}#{side}#{j}": t.detach().contiguous().clone() for name in order
               for side in ("out", "in") for j, t in enumerate(seen[name][side])},
              os.path.join(work, "modules.safetensors"))
    with open(os.path.join(work, "modules.json"), "w", encoding="utf-8") as f:
        json.dump({name: {side: len(seen[name][side]) for side in ("out", "in")} for name in order}, f)


def _at_second_config(module, folder: str, work: str) -> None:
    """model.py's model built with `load_model(FOLDER)` (a second config.json, Hugging Face's weights at it) and run
    on FOLDER/inputs.safetensors: its outputs to FOLDER/outputs.safetensors, the names of FOLDER/persistent.json
    (Hugging Face's state dict) that model.py has no tensor for to FOLDER/unexpected.json; a failure (its place in
    model.py and its last line) to FOLDER/error.json instead."""
    import torch
    from safetensors.torch import load_file, save_file

    modules: dict = {}
    try:
        _as_exported(module, folder)
        model = module.load_model(folder).eval()
        modules.update({id(m): name for name, m in model.named_modules() if name})
        with open(os.path.join(folder, "persistent.json"), encoding="utf-8") as f:
            persistent = json.load(f)
        own = set(model.state_dict())
        with open(os.path.join(folder, "unexpected.json"), "w", encoding="utf-8") as f:
            json.dump([k for k in persistent if k not in own], f)
        inputs = load_file(os.path.join(folder, "inputs.safetensors"))
        with torch.no_grad():
            out = model(**inputs)
        names = json.loads(open(os.path.join(folder, "names.json"), encoding="utf-8").read())
        save_file({k: t.detach().contiguous().clone() for k, t in _tensors(out, names).items()},
                  os.path.join(folder, "outputs.safetensors"))
    except Exception as err:  # noqa: BLE001 - said to the check, which writes model.py again with fixed sizes
        found = where(err, os.path.dirname(module.__file__), modules)
        text = str(err).strip().splitlines()
        found["error"] = f"{type(err).__name__}: {text[0] if text else ''}"[:300]
        with open(os.path.join(folder, "error.json"), "w", encoding="utf-8") as f:
            json.dump(found, f)


def _as_exported(module, folder: str) -> None:
    """FOLDER/model.safetensors as an export would write it at that config: Hugging Face's tensors that model.py
    holds (its own model, built on the meta device), and its LoRA tensors, which Hugging Face's model has not,
    as PEFT starts them: A random, B zero."""
    import torch
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    config = module.Config.from_json(os.path.join(folder, "config.json"))
    skipped = {name: getattr(torch.nn.init, name) for name in module.INIT_FUNCTIONS}
    for name in skipped:  # no init on the meta device (as load_model builds it): a first one costs a second
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        with torch.device("meta"):
            wanted = module.Model(config).state_dict()
    finally:
        for name, function in skipped.items():
            setattr(torch.nn.init, name, function)
    gen = torch.Generator().manual_seed(0)
    loras = {k: (torch.zeros(t.shape, dtype=t.dtype) if "lora_B" in k else torch.randn(t.shape, generator=gen) * 0.02)
             for k, t in wanted.items() if k not in tensors and "lora_" in k}
    save_file({**{k: t for k, t in tensors.items() if k in wanted}, **loras}, path)


def where(err: BaseException, folder: str, modules: dict) -> dict:
    """Where in model.py `err` was raised: the innermost frame of model.py (its function, line and code) and the
    path of the innermost module whose code was running (`modules`: id -> path, once the model is built)."""
    path = os.path.realpath(os.path.join(folder, "model.py"))
    found: dict = {}
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if os.path.realpath(code.co_filename) == path:
            found.update(function=getattr(code, "co_qualname", code.co_name), line=tb.tb_lineno)
            owner = tb.tb_frame.f_locals.get("self")
            if id(owner) in modules:
                found["module"] = modules[id(owner)]
        tb = tb.tb_next
    if "line" in found:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        found["code"] = lines[found["line"] - 1].strip() if found["line"] <= len(lines) else ""
    return found


if __name__ == "__main__":
    MODULES: dict = {}
    try:
        sys.exit(main(sys.argv[1], sys.argv[2], MODULES))
    except Exception as error:  # say where, then fail with the traceback on stderr
        with open(os.path.join(sys.argv[2], "failure.json"), "w", encoding="utf-8") as out:
            json.dump(where(error, sys.argv[1], MODULES), out)
        raise
