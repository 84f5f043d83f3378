"""model.py against Hugging Face on every decoder-only and encoder-only text type coverage.py builds.

Per type (tests/model_zoo.py: tiny config, seeded weights, written with save_pretrained, captured from the folder
as a user would) two folders are exported: no LoRA, and random LoRA A, B on q and v of every layer. Each model.py
is executed in a namespace where `import graphsurgeon` fails, and compared on:
  ids     model(input_ids=x) alone
  pad     a padded attention_mask (row 0 padded on the left, row 1 on the right; non-pad positions compared)
  tt      non-zero token_type_ids, where the model takes them
  loss    `loss` with labels (causal LM / masked LM, whatever head the type's class has)
The oracle is the Hugging Face model without LoRA, and the editor's graph with LoRA (equal to PEFT: coverage.py);
the LoRA loss is Hugging Face's own loss_function on the graph's logits. Pass: every diff ≤ 1e-5 and 0
`torch.ops.aten` lines and no semantic analysis that fell back (its names would be fx names).
Run: .venv/bin/python benchmarks/codegen_sweep.py [type ...]
"""

from __future__ import annotations

import builtins
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
transformers.utils.logging.disable_progress_bar()
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS  # noqa: E402

from graphsurgeon.capture import capture  # noqa: E402
from graphsurgeon.export import export_folder  # noqa: E402
from graphsurgeon.export.codegen import aten_calls  # noqa: E402
from graphsurgeon.surgery import LoRAConfig, add_lora  # noqa: E402
from model_zoo import example_inputs, model_class, save, tiny_config  # noqa: E402
from surgery_models import randomize  # noqa: E402

TOL = 1e-5
CHECKS = ("ids", "pad", "tt", "loss")


def text_types() -> list[str]:
    """PEFT's table ∩ this transformers, without encoder-decoders and models that read images or audio."""
    out = []
    for t in PEFT_TARGETS:
        if t not in transformers.CONFIG_MAPPING:
            continue
        cfg = tiny_config(t)
        if getattr(cfg, "is_encoder_decoder", False) or any(hasattr(cfg, k) for k in ("vision_config", "audio_config")):
            if t not in ("llama4",):  # llama4's text model is what model_zoo builds
                continue
        out.append(t)
    return out


def exec_without_graphsurgeon(folder: Path):
    """folder/model.py executed in a fresh namespace whose imports refuse graphsurgeon; its model (eval)."""
    real = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] == "graphsurgeon":
            raise ImportError(f"model.py imports {name}")
        return real(name, *args, **kwargs)

    names = {"__name__": f"sweep_{folder.parent.name}_{folder.name}".replace("-", "_"),
             "__builtins__": {**builtins.__dict__, "__import__": guarded}}
    source = (folder / "model.py").read_text()
    sys.modules[names["__name__"]] = type(sys)(names["__name__"])  # dataclasses etc. look the module up
    sys.modules[names["__name__"]].__dict__.update(names)
    exec(compile(source, str(folder / "model.py"), "exec"), sys.modules[names["__name__"]].__dict__)
    return sys.modules[names["__name__"]].__dict__["load_model"](str(folder)).eval()


def inputs(vocab: int, batch: int = 3, seq: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(3, vocab, (batch, seq), generator=gen)  # no pad/bos/eos ids (model_zoo keeps them ≤ 2)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, :3] = 0
    mask[1, seq - 2:] = 0
    return ids, mask


def diff(got: dict, want: dict, keep: torch.Tensor | None = None) -> float:
    """Largest |got − want| over the outputs both have; [B, T, …] outputs on the kept positions only."""
    worst = 0.0
    shared = [k for k in want if isinstance(want[k], torch.Tensor) and k != "loss"]
    if not shared:
        raise RuntimeError("no output to compare")
    for k in shared:
        if k not in got:
            raise RuntimeError(f"model.py does not return {k}")
        a, b = got[k], want[k]
        if a.shape != b.shape:
            raise RuntimeError(f"{k}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        if keep is not None and a.dim() >= 2 and a.shape[:2] == keep.shape:
            a, b = a[keep], b[keep]
        worst = max(worst, (a.float() - b.float()).abs().max().item())
    return worst


def hf_outputs(out) -> dict:
    return {k: out[k] for k in out.keys() if isinstance(out[k], torch.Tensor)}


def compare(ours, oracle, lora_loss, kind: str, vocab: int, token_types: bool, loss_kind: str | None,
            seq: int) -> dict:
    """{check: max diff} for model.py `ours` vs `oracle(**inputs) -> {name: tensor}`."""
    ids, mask = inputs(vocab, seq=seq)
    res = {}
    with torch.no_grad():
        res["ids"] = diff(ours(input_ids=ids), oracle(input_ids=ids))
        if "attention_mask" in kind:
            res["pad"] = diff(ours(input_ids=ids, attention_mask=mask), oracle(input_ids=ids, attention_mask=mask),
                              mask.bool())
        if token_types:
            tt = torch.zeros_like(ids)
            tt[:, 4:] = 1
            res["tt"] = diff(ours(input_ids=ids, token_type_ids=tt), oracle(input_ids=ids, token_type_ids=tt))
        if loss_kind:
            labels = ids.clone()
            if loss_kind == "masked":  # MLM: a few positions labelled, the rest ignored
                labels[:, ::2] = -100
            labels[0, :3] = -100  # the left padding of row 0
            got = ours(input_ids=ids, attention_mask=mask, labels=labels)["loss"]
            want = lora_loss(ids, mask, labels)
            res["loss"] = abs(got.item() - want.item())
    return res


def run_type(model_type: str, tmp: Path) -> list[dict]:
    rows = []
    try:
        folder = save(model_type, tmp / model_type)
        cm = capture(folder)
        if example_inputs(model_type, tiny_config(model_type)) is not None:
            raise RuntimeError("needs more than token ids")
        ref = model_class(model_type).from_pretrained(folder, attn_implementation=cm.attn_implementation).eval()
    except Exception as err:  # noqa: BLE001 - the row says what failed
        return [{"type": model_type, "lora": "-", "reason": f"capture: {_first_line(err)}"}]
    vocab = ref.config.vocab_size
    ids_val = next(n for n in cm.gm.graph.nodes if n.op == "placeholder").meta.get("val")
    seq = 7 if isinstance(ids_val.shape[1], torch.SymInt) else int(ids_val.shape[1])  # a capture fixed at its length
    sig = set(cm.input_names)
    token_types = "token_type_ids" in sig and (getattr(ref.config, "type_vocab_size", 0) or 0) > 1
    loss_kind = None
    if cm.hf_loss:
        loss_kind = "masked" if "MaskedLM" in cm.hf_loss.get("loss_type", "") else "causal"

    def hf(**x):
        return hf_outputs(ref(**x))

    def hf_loss(ids, mask, labels):
        return ref(input_ids=ids, attention_mask=mask, labels=labels).loss

    def graph(**x):
        return cm.run(**x)

    def graph_loss(ids, mask, labels):
        logits = cm.run(input_ids=ids, attention_mask=mask)["logits"]
        return ref.loss_function(logits=logits, labels=labels, vocab_size=ref.config.vocab_size)

    for lora in (False, True):
        row = {"type": model_type, "lora": "q,v" if lora else "none", "reason": ""}
        rows.append(row)
        try:
            if lora:
                add_lora(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4))
                randomize(cm, seed=3)
            out = tmp / f"{model_type}-{row['lora'].replace(',', '')}"
            export_folder(cm, out)
            text = (out / "model.py").read_text()
            row["lines"] = len(text.splitlines())
            row["aten"] = aten_calls(text)
            row["classes"] = len(re.findall(r"^class \w+", text, re.M))
            row["semantics"] = len(cm.semantics().problems)  # analyses that fell back (names would be fx names)
            ours = exec_without_graphsurgeon(out)
            row.update(compare(ours, graph if lora else hf, graph_loss if lora else hf_loss,
                               " ".join(cm.input_names), vocab, token_types, loss_kind, seq))
        except Exception as err:  # noqa: BLE001
            row["reason"] = _first_line(err)
            if os.environ.get("SWEEP_TRACE"):
                traceback.print_exc()
    return rows


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:160]


def passed(row: dict) -> bool:
    return not row["reason"] and row.get("aten") == 0 and not row.get("semantics") \
        and all(row.get(c, 0.0) <= TOL for c in CHECKS)


def verdict(row: dict) -> str:
    if row["reason"]:
        return row["reason"].replace("|", "/")
    if row.get("aten"):
        return f"{row['aten']} aten lines"
    if row.get("semantics"):
        return f"{row['semantics']} semantic analyses fell back"
    bad = [c for c in CHECKS if row.get(c, 0.0) > TOL]
    return "pass" if not bad else "> 1e-5: " + ", ".join(bad)


def table(rows: list[dict]) -> str:
    def num(r, k):
        return "" if k not in r else f"{r[k]:.0e}" if isinstance(r[k], float) else str(r[k])

    lines = ["| type | LoRA | lines | aten | classes | ids | pad | token types | loss | result |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['type']} | {r['lora']} | {num(r, 'lines')} | {num(r, 'aten')} | {num(r, 'classes')} | "
                     f"{num(r, 'ids')} | {num(r, 'pad')} | {num(r, 'tt')} | {num(r, 'loss')} | {verdict(r)} |")
    return "\n".join(lines)


def main(types: list[str]) -> None:
    types = types or text_types()
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphsurgeon-codegen-sweep-") as tmp:
        for t in types:
            t0 = time.perf_counter()
            new = run_type(t, Path(tmp))
            rows += new
            print(f"{t:14s} {time.perf_counter() - t0:5.1f} s " + "; ".join(f"{r['lora']}: {verdict(r)}" for r in new),
                  file=sys.stderr, flush=True)
    print(table(rows))
    n_types = len({r["type"] for r in rows})
    ok = {r["type"] for r in rows} - {r["type"] for r in rows if not passed(r)}
    print(f"\n{len(ok)} of {n_types} types pass both exports (≤ {TOL:g}, 0 aten) in "
          f"{(time.perf_counter() - start) / 60:.1f} min; transformers {transformers.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
