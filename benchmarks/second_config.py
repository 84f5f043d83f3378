"""model.py at a second config: does the exported model build at other sizes and equal Hugging Face there?

Per type (tests/model_zoo.py: a tiny config, written with save_pretrained and captured from the folder as a user
would): the model is exported (no LoRA) — its self-check runs model.py at a second config of its own
(graphsurgeon/export/second_config.py) and pins what fails there — then config.json beside model.py is changed
another way than the self-check's (held out from it): two more layers (per-layer lists such as layer_types repeated),
hidden size ×1.5 (with the fields equal to it: OPT's word_embed_proj_dim), intermediate size + 32, vocabulary + 11.
model.py's `Model(Config.from_json(...))` gets the Hugging Face model's state dict at that config. Reported per type:
  check      what the export's self-check said of the sizes: proven (at its own second config), pinned (the
             layer count or head counts: Config refuses others), literal (every size), not checked
  result     at the held-out config: max |model.py − HF| on the self-check's padded case, "refused" (model.py's
             Config refuses a config of other sizes: loud), or the step that failed and why (loud)
A type passes at ≤ 1e-5 or refused; a difference over 1e-5 is silently wrong (must be 0). Each model.py is also
checked as tests/test_modelpy_style.py checks the suite's: `ruff format --line-length 119` leaves it as written.
Run: .venv/bin/python benchmarks/second_config.py [type ...] (no types: every text type coverage.py --all runs);
`--mode layers` or `--mode hidden` moves only those sizes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()

from graphsurgeon.capture import capture  # noqa: E402
from graphsurgeon.export import export_folder  # noqa: E402
from graphsurgeon.export.verify_cases import cases  # noqa: E402
from graphsurgeon.export.second_config import HIDDEN, NOT_A_WIDTH, WIDTH, coupled_head_size  # noqa: E402
from graphsurgeon.export.codegen.probes import LAYERS, per_layer_lists  # noqa: E402
from coverage_all import MAX_PARAMS  # noqa: E402
from model_zoo import model_class, save, tiny_config  # noqa: E402

TOL = 1e-5


def second_config(cfg: dict, mode: str = "both") -> dict:
    """The changes a user makes to grow the model (see the module docstring)."""
    out: dict = {}
    if mode in ("both", "layers"):
        layers = next((k for k in LAYERS if isinstance(cfg.get(k), int)), None)
        if layers is not None:
            out[layers] = cfg[layers] + 2
            out.update(per_layer_lists(cfg, out))
    if mode in ("both", "hidden"):
        hidden = next((cfg[k] for k in HIDDEN if type(cfg.get(k)) is int), None)
        if hidden is not None and hidden % 2 == 0:
            out.update({k: v * 3 // 2 for k, v in cfg.items() if type(v) is int and v == hidden
                        and WIDTH.search(k) and not NOT_A_WIDTH.search(k)})
            out.update(coupled_head_size(cfg, out, next(k for k in HIDDEN if type(cfg.get(k)) is int)))
        if isinstance(cfg.get("intermediate_size"), int):
            out["intermediate_size"] = cfg["intermediate_size"] + 32
        if isinstance(cfg.get("vocab_size"), int):
            out["vocab_size"] = cfg["vocab_size"] + 11
    return out


def formatted(path: Path) -> bool:
    """Whether `ruff format --line-length 119` leaves the file as it is (tests/test_modelpy_style.py's check)."""
    import subprocess

    from ruff.__main__ import find_ruff_bin

    done = subprocess.run([find_ruff_bin(), "format", "--line-length", "119", "--check", str(path)],
                          capture_output=True, text=True)
    return done.returncode == 0


def check_status(check: str) -> str:
    """What the export's line says of the sizes (export/second_config.py)."""
    if "(Config refuses others): every size" in check:
        return "literal"
    if "(Config refuses others)" in check:
        return "pinned"
    if "sizes checked against Hugging Face" in check:
        return "proven"
    return "not checked"


def run_type(model_type: str, tmp: Path, mode: str) -> dict:
    row = {"type": model_type, "check": "", "result": "", "count": "", "passed": False, "wrong": False}
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in model_class(model_type)(tiny_config(model_type)).parameters())
        if n > MAX_PARAMS:  # as coverage.py --all: the benchmark's limit, not the model's
            row["result"] = f"not run: the tiny config has {n / 1e6:.0f} M parameters"
            return row
        folder = Path(save(model_type, tmp / model_type))
        cm = capture(str(folder))
        try:
            result = export_folder(cm, tmp / f"{model_type}-export")
        except Exception as err:  # noqa: BLE001 - graphsurgeon's refusal (or a bug): its own row
            row["check"], row["result"] = "export failed", f"{type(err).__name__}: {err}"[:300]
            return row
        row["check"] = check_status(result.check)
        row["why"] = result.check.partition("(Config refuses others): ")[2][:300]
        text = (tmp / f"{model_type}-export" / "model.py").read_text()
        row["formatted"] = formatted(tmp / f"{model_type}-export" / "model.py")
        cfg = json.loads((folder / "config.json").read_text())
        changed = {**cfg, **second_config(cfg, mode)}
        second = tmp / f"{model_type}-second"
        second.mkdir()
        (second / "model.py").write_text(text)
        (second / "config.json").write_text(json.dumps(changed))
        row["count"] = "config" if re.search(r"range\(config\.|for \w+ in config\.\w+\]", text) else "literal"
        spec = importlib.util.spec_from_file_location(f"second_{model_type.replace('-', '_')}", second / "model.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        x = {k: t % 100 if "input_ids" in k else t for k, t in cases(cm)[-1][1].items()}  # the self-check's inputs
        try:
            hf_config = transformers.AutoConfig.for_model(**changed)
            hf_config._attn_implementation = cm.attn_implementation or "sdpa"
            torch.manual_seed(0)
            hf = getattr(transformers, cm.model_class)(hf_config).eval()
            with torch.no_grad():
                want = hf(**x)[0]
        except Exception as err:  # noqa: BLE001 - Hugging Face's own limit at this config: no reference
            row["result"], row["hf_refuses"] = f"HF refuses this config: {type(err).__name__}: {err}"[:160], True
            return row
        try:
            config = mod.Config.from_json(str(second / "config.json"))
        except ValueError as err:  # the Config of pinned sizes refuses: loud
            row["result"], row["passed"] = "refused: " + str(err)[:100], "fixed at the exported config" in str(err)
            return row
        ours = mod.Model(config).eval()
        missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
        theirs = dict(hf.named_buffers())  # a buffer model.py reads from the weights file (no recipe computes it):
        kept = [k for k in missing if k in dict(ours.named_buffers()) and k in theirs]  # HF's value, as the file has
        for k in kept:
            ours.get_buffer(k).copy_(theirs[k])
        missing = [k for k in missing if k not in kept]
        if missing or unexpected:
            row["result"] = f"{len(missing)} parameters missing, {len(unexpected)} unexpected"
            return row
        with torch.no_grad():
            got = ours(**x)[0]
        if got.shape != want.shape:
            row["result"] = f"shape {tuple(got.shape)} vs HF {tuple(want.shape)}"
            return row
        diff = (got - want).abs().max().item()
        row["result"], row["passed"] = f"{diff:.1e}" + (f" ({len(kept)} buffers from the file)" if kept else ""), \
            diff <= TOL
        row["wrong"] = diff > TOL
    except Exception as err:  # noqa: BLE001 - the row says which step failed and why
        text = str(err).strip().splitlines()
        row["result"] = f"{type(err).__name__}: {text[0] if text else ''}"[:160]
    return row


def isolated(model_type: str, tmp: Path, mode: str, timeout: float = 300) -> dict:
    """run_type in a forked process: a type that kills its process (a floating-point trap in torch, memory) or hangs
    is a row, not the end of the run."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=lambda: send.send(run_type(model_type, tmp, mode)))
    proc.start()
    wait([receive, proc.sentinel], timeout)
    if receive.poll():
        row = receive.recv()
    else:
        row = {"type": model_type, "check": "", "result": f"its process ended without a result (exit {proc.exitcode})",
               "count": "", "passed": False, "wrong": False}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    return row


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="second_config.py")
    p.add_argument("--mode", choices=("both", "layers", "hidden"), default="both")
    p.add_argument("types", nargs="*")
    args = p.parse_args(argv)
    if args.types:
        types = args.types
    else:
        from coverage_all import text_types

        types = text_types()[0]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gs-second-") as tmp:
        for t in types:
            rows.append(isolated(t, Path(tmp), args.mode))
            r = rows[-1]
            print(f"| {r['type']} | {r['check']} | {'✓' if r['passed'] else '✗'} | {r['count']} | {r['result']} | "
                  f"{'' if r.get('formatted', True) else 'not ruff-formatted; '}{r.get('why', '')} |", flush=True)
    large = [r for r in rows if r["result"].startswith("not run")]
    no_model = [r for r in rows if r not in large and not r["check"]]  # the tiny model does not save or capture
    hf_refuses = [r for r in rows if r.get("hf_refuses")]
    ran = [r for r in rows if r not in large and r not in no_model and r not in hf_refuses]
    checks = {k: sum(r["check"] == k for r in ran) for k in ("proven", "pinned", "literal", "not checked",
                                                             "export failed")}
    equal = sum(r["passed"] and not r["result"].startswith("refused") for r in ran)
    refused = sum(r["passed"] and r["result"].startswith("refused") for r in ran)
    wrong = sum(r["wrong"] for r in ran)
    print(f"\n{len(ran)} types run (not run: {len(large)} a tiny config too large, {len(no_model)} a tiny model that "
          f"does not save or capture, {len(hf_refuses)} HF refuses the held-out config). The export's self-check: "
          + ", ".join(f"{n} {k}" for k, n in checks.items()) + f". At the held-out config: {equal} equal Hugging "
          f"Face (≤ {TOL:g}), {refused} refused by model.py's Config, {wrong} differ silently, "
          f"{len(ran) - equal - refused - wrong} fail loudly otherwise; "
          f"{sum(r['count'] == 'config' for r in rows)} read their layer count from the config; "
          f"ruff format leaves {sum(bool(r.get('formatted')) for r in rows)} of "
          f"{sum('formatted' in r for r in rows)} model.py files as written; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
