"""Coverage matrix: every model type of PEFT's default LoRA target table that transformers ships.

For each type a tiny random model (hidden 64, 2 layers, 4 heads where the config allows; tests/model_zoo.py)
is written with save_pretrained and taken through what a user does: capture the folder, find q and v,
add LoRA (r=2, alpha=4) on every layer, validate, export. Reported per type:
  capture   ok, and what capture chose (eager attention, a sequence bound)
  q/v       how q and v sit in their projection: Linear / contiguous slice / interleaved set;
            ✓ when the column sets equal the marker-row ground truth (tests/layout_truth.py, independent)
  find      target finding, median of 5: a first search (replay cache empty) / a search with replays cached
  valid     full validation after the edit
  B=0       max |graph − Hugging Face model| with B = 0
  PEFT      max |graph − PEFT| with random A, B; fused targets use the rank-Σr adapter built here from the
            ground-truth column sets (B's rows scattered over them)
  export    the folder is written and its model.py gives the graph's output (max diff)
  generate  (--all) a causal LM's model.py generate() writes HF's greedy tokens (8 new, LoRA included)
and the exact reason when a step fails. Run: .venv/bin/python benchmarks/coverage.py [type ...]
`--all [--jobs N] [--readme README.md]`: every text model type transformers ships (benchmarks/coverage_all.py).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS  # noqa: E402

from graphsurgeon.capture import capture  # noqa: E402
from graphsurgeon.graph.semantics import columns  # noqa: E402
from graphsurgeon.graph.semantics.cores import attention_operands  # noqa: E402
from graphsurgeon.graph.semantics.dataflow import layer_index, module_of  # noqa: E402
from graphsurgeon.surgery import LoRAConfig, add_lora, find_targets, lora_weights, resolve_targets  # noqa: E402
from graphsurgeon.validate import validate_full  # noqa: E402
from layout_truth import row_sources  # noqa: E402
from model_zoo import example_inputs, model_class, save  # noqa: E402
from surgery_models import randomize  # noqa: E402

TOL = 1e-5


def first(out) -> torch.Tensor:
    if isinstance(out, dict) or hasattr(out, "keys"):
        return out["logits"] if "logits" in out.keys() else next(iter(out.values()))
    return out[0]


def category(cm, config: dict | None = None) -> str:
    cfg = cm.config or config or {}
    n_attn = len(attention_operands(cm.gm))
    if n_attn == 0:
        return "attention-free"
    if cfg.get("is_encoder_decoder"):
        return "encoder-decoder"
    if any(k in cfg for k in ("vision_config", "audio_config")):
        return "multimodal"
    layers = {layer_index(n.target) for n in cm.gm.graph.nodes if n.op == "get_attr"} - {None}
    attention_layers = {layer_index(module_of(a)[0]) for a, _ in attention_operands(cm.gm)}
    if len(attention_layers) < len(layers):
        return "hybrid"
    return "encoder" if cm.model_class.endswith("ForMaskedLM") else "decoder"


def run_type(model_type: str, tmp: Path) -> dict:
    row = {"type": model_type, "class": "", "kind": "", "capture": "", "qv": "", "find": "", "valid": "", "b0": None,
           "peft": None, "moved": 0.0, "export": "", "seconds": 0.0, "reason": ""}
    t0 = time.perf_counter()
    try:
        _steps(model_type, tmp, row)
    except Exception as err:  # noqa: BLE001 - the row says which step failed and why
        text = str(err).strip().splitlines()
        row["reason"] = (text[0] if text else type(err).__name__)[:240]
    row["seconds"] = time.perf_counter() - t0
    return row


def _steps(model_type: str, tmp: Path, row: dict) -> None:
    folder = save(model_type, tmp / model_type)
    reference = None
    extra = example_inputs(model_type, model_class(model_type).config_class.from_pretrained(folder))
    if extra is None:
        cm = capture(folder)
        how = "; ".join(cm.notes)
    else:  # an image model: captured from Python with the inputs its processor builds (the folder alone cannot be)
        reference = _reference(model_type, folder, "sdpa")
        cm = capture(reference, example_inputs=extra, dynamic={k: {0: "batch"} for k in extra})
        how = f"from Python with {', '.join(extra)}"
    row["class"], row["kind"] = cm.model_class, category(cm, reference.config.to_dict() if reference else None)
    row["capture"] = "ok" + (f" ({how})" if how else "")
    cold, warm = [], []
    for _ in range(5):  # interleaved: a search of a structure never seen (replay cache empty), and one seen before
        cm.touch()
        columns._CACHE.clear()
        t = time.perf_counter()
        find_targets(cm)
        cold.append(time.perf_counter() - t)
        cm.touch()
        t = time.perf_counter()
        find_targets(cm)
        warm.append(time.perf_counter() - t)
    row["find"] = f"{statistics.median(cold) * 1e3:.1f} / {statistics.median(warm) * 1e3:.1f} ms"
    targets = resolve_targets(cm, ("q", "v"), "all")
    kinds = sorted({t.column_kind for t in targets}, key=["whole", "contiguous slice", "interleaved set"].index)
    row["qv"] = " + ".join("Linear" if k == "whole" else k for k in kinds)
    reference = reference or _reference(model_type, folder, cm.attn_implementation)
    truth = _truth(reference, model_type, cm, targets)
    exact = all(_columns(t) == truth[(t.attention, t.role)][t.module.rsplit(".", 1)[-1]] for t in targets)
    row["qv"] += " ✓" if exact else " ✗ (columns differ from the marker ground truth)"
    with torch.no_grad():
        original = first(reference(**cm.example_inputs))
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4))
    problems = validate_full(cm)
    row["valid"] = "ok" if not problems else str(problems[0])[:120]
    with torch.no_grad():
        row["b0"] = (first(cm.run(**cm.example_inputs)) - original).abs().max().item()
        randomize(cm, seed=3)
        ours = first(cm.run(**cm.example_inputs))
        row["moved"] = (ours - original).abs().max().item()  # the LoRA really acts (> 1e-3)
        row["peft"] = (ours - first(_peft(reference, cm, truth)(**cm.example_inputs))).abs().max().item()
    row["export"] = f"ok ({export_diff(cm, tmp / f'{model_type}-out', ours):.0e})"


def _columns(t) -> set[int]:
    return set(t.columns) if t.columns is not None else set(range(t.out_features))


def _reference(model_type: str, folder: str, attn: str | None):
    return model_class(model_type).from_pretrained(folder, attn_implementation=attn).eval()


def _truth(reference, model_type: str, cm, targets) -> dict:
    """{(attention module path, role): {projection leaf: rows}} from marker rows, calls matched in graph order.

    Marked: PEFT's target modules, and modules with the leaf names of the targets found (BLIP-2's vision qkv and
    Q-Former query/value, which PEFT's table does not name) — the rows they feed are the ground truth's own."""
    inputs = example_inputs(model_type, reference.config, batch=1, text=1) or {"input_ids": torch.tensor([[5]])}
    if "decoder_input_ids" in cm.input_names:
        inputs["decoder_input_ids"] = torch.tensor([[1]])
    names = PEFT_TARGETS.get(model_type, [])  # a type PEFT's table lacks: the leaf names of the targets found
    if not isinstance(names, str):
        names = list(dict.fromkeys(list(names) + [t.module.rsplit(".", 1)[-1] for t in targets]))
    try:
        calls = row_sources(reference, names, inputs)
    except (IndexError, RuntimeError):  # a model that cannot run one token (Funnel pools the sequence): the
        # capture's own example, its first row
        inputs = {k: v[:1] for k, v in cm.example_inputs.items() if isinstance(v, torch.Tensor)}
        calls = row_sources(reference, names, inputs)
    paths = [module_of(attn)[0] for attn, _ in attention_operands(cm.gm)]
    if len(calls) != len(paths):
        raise RuntimeError(f"the model ran {len(calls)} attention calls, the graph has {len(paths)} attention ops")
    truth: dict = {}  # one attention module with several calls (DiffLlama's two maps): the rows all its calls read
    for path, call in zip(paths, calls):
        for role in "qkv":
            have = truth.setdefault((path, role), {})
            for leaf, rows in call[role].items():
                have[leaf] = set(have.get(leaf, ())) | set(rows)
    return truth


def _peft(reference, cm, truth: dict):
    """PEFT on the whole modules; a module holding several blocks gets A stacked and B scattered over the
    ground-truth rows of each (in the target's order), zero elsewhere."""
    import peft

    groups: dict[str, list] = {}
    for block in cm.loras.values():
        groups.setdefault(block.target.module, []).append(block)
    ranks = {m: sum(b.config.r for b in bl) for m, bl in groups.items()}
    alphas = {m: ranks[m] * bl[0].config.scaling for m, bl in groups.items()}
    conv1d = any(b.target.kind == "conv1d" for b in cm.loras.values())
    model = peft.get_peft_model(reference, peft.LoraConfig(r=2, lora_alpha=4, target_modules=sorted(groups),
                                                           rank_pattern=ranks, alpha_pattern=alphas,
                                                           fan_in_fan_out=conv1d)).eval()
    params = dict(model.named_parameters())
    for module, blocks in groups.items():
        key = f"base_model.model.{module}"
        b_full = torch.zeros_like(params[f"{key}.lora_B.default.weight"])
        col = 0
        for block in blocks:
            rows = list(block.target.columns) if block.target.columns is not None else list(range(block.target.out_features))
            if truth is not None:  # None: no marker-row ground truth for this model (coverage.py --all)
                assert set(rows) == truth[(block.target.attention, block.target.role)][module.rsplit(".", 1)[-1]]
            b_full[rows, col:col + block.config.r] = lora_weights(cm, block.path)[1].weight
            col += block.config.r
        params[f"{key}.lora_A.default.weight"].copy_(torch.cat([lora_weights(cm, b.path)[0].weight for b in blocks]))
        params[f"{key}.lora_B.default.weight"].copy_(b_full)
    return model


def exported_model(out: Path) -> torch.nn.Module:
    """The model of the written model.py, loaded in this process as a user loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"exported_{out.name.replace('-', '_')}", out / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_model(str(out)).eval()


def export_diff(cm, out: Path, ours: torch.Tensor) -> float:
    """Export (with the self-check) and run the written model.py in this process: max |model.py − graph|."""
    from graphsurgeon.export import export_folder

    export_folder(cm, out)
    with torch.no_grad():
        got = first(exported_model(out)(**cm.example_inputs))
    return (got - ours).abs().max().item()


def generate_check(ours: torch.nn.Module, theirs: torch.nn.Module, inputs: dict, new: int = 8) -> str:
    """model.py's greedy generate() against Hugging Face's generate() of the same weights (each with its own eos
    and pad defaults): "✓", "✗ at new token k", "HF: <error>" when HF's cannot run, "" when model.py has none."""
    if not hasattr(ours, "generate"):
        return ""
    x = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
    try:
        with torch.no_grad():
            want = theirs.generate(**x, max_new_tokens=new, do_sample=False)
    except Exception as err:  # noqa: BLE001 - HF's generate of this type needs more than token ids
        return f"HF: {type(err).__name__}"
    got = ours.generate(**x, max_new_tokens=new)
    if got.shape == want.shape and torch.equal(got, want):
        return "✓"
    start = x["input_ids"].shape[1]
    width = min(got.shape[1], want.shape[1])
    differ = (got[:, :width] != want[:, :width]).any(0).nonzero()
    return f"✗ at new token {int(differ[0]) - start + 1 if len(differ) else width - start + 1}"


def passed(row: dict) -> bool:
    return (not row["reason"] and row["valid"] == "ok" and row["b0"] is not None and row["b0"] <= TOL
            and row["peft"] is not None and row["peft"] <= TOL and row["moved"] > 1e-3 and row["export"].startswith("ok")
            and "✓" in row["qv"])


def table(rows: list[dict]) -> str:
    def num(v):
        return "" if v is None else f"{v:.0e}"

    lines = ["| type | class | kind | capture | q/v found | find (first / later) | valid | B=0 diff | PEFT diff | export "
             "| time | result |", "|" + "---|" * 12]
    for r in rows:
        result = "pass" if passed(r) else (r["reason"] or "fails ≤ 1e-5").replace("|", "/")
        lines.append(f"| {r['type']} | {r['class']} | {r['kind']} | {r['capture']} | {r['qv']} | {r['find']} | "
                     f"{r['valid']} | {num(r['b0'])} | {num(r['peft'])} | {r['export']} | {r['seconds']:.1f} s | {result} |")
    return "\n".join(lines)


def main(types: list[str]) -> None:
    types = types or [t for t in PEFT_TARGETS if t in transformers.CONFIG_MAPPING]
    skipped = [t for t in PEFT_TARGETS if t not in transformers.CONFIG_MAPPING]
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphsurgeon-coverage-") as tmp:
        for model_type in types:
            rows.append(run_type(model_type, Path(tmp)))
            r = rows[-1]
            print(f"{model_type:12s} {'pass' if passed(r) else 'FAIL'} {r['seconds']:.1f} s {r['reason']}",
                  file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    print(table(rows))
    n_pass = sum(passed(r) for r in rows)
    print(f"\n{n_pass} of {len(rows)} types pass (≤ {TOL:g}) in {total / 60:.1f} min (target ≤ 10 min); "
          f"PEFT {getattr(__import__('peft'), '__version__', '?')}, transformers {transformers.__version__}. "
          f"Not in this transformers: {', '.join(skipped)}.")
    cold = [float(r["find"].split(" / ")[0]) for r in rows if r["find"]]
    if cold:
        print(f"target finding, a first search per model: median over types {statistics.median(cold):.1f} ms, "
              f"max {max(cold):.1f} ms (target ≤ 5 ms per model)")


def parse(argv: list[str]) -> list[str]:
    """The model types of the PEFT-table mode (`coverage.py [type ...]`); --help and unknown options are options,
    never model types (argparse: usage and exit 2)."""
    import argparse

    p = argparse.ArgumentParser(prog="coverage.py", description="Coverage matrix of PEFT's default LoRA target table "
                                "(tiny models, capture → LoRA on q, v → validate → export). `coverage.py --all --help`: "
                                "every text model type transformers ships.")
    p.add_argument("--all", action="store_true", help="every text model type transformers ships, in worker processes "
                   "(see `coverage.py --all --help`)")
    p.add_argument("types", nargs="*", help="only these model types (default: every type of PEFT's table)")
    args = p.parse_args(argv)
    unknown = [t for t in args.types if t not in transformers.CONFIG_MAPPING]
    if unknown:
        p.error(f"{', '.join(unknown)} is not a model type of transformers {transformers.__version__}; "
                "name types as config.json's model_type spells them (e.g. llama, gpt2)")
    return args.types


if __name__ == "__main__":
    if "--all" in sys.argv[1:]:  # every text model type transformers ships, each in a worker process
        import coverage_all

        coverage_all.main(sys.argv[1:])
    else:
        main(parse(sys.argv[1:]))
