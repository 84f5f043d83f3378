"""model.py at a second config: does the written model build at other sizes and equal Hugging Face there?

Per type (tests/model_zoo.py: a tiny config, written with save_pretrained and captured from the folder as a user
would): model.py is generated (no LoRA), config.json is changed the way a user grows a model — two more layers (with
the config's per-layer lists such as layer_types repeated to match), hidden size ×1.5, intermediate size + 32,
vocabulary + 11 — and model.py's `Model(Config.from_json(...))` gets the Hugging Face model's state dict at that
config. Reported per type:
  result     max |model.py − HF| on 7 tokens at the second config, or the step that failed and why
  count      whether the layer count reads the config (`range(config.num_hidden_layers)`) or stays a literal
A type passes at ≤ 1e-5 with every parameter loaded. Run: .venv/bin/python benchmarks/second_config.py [type ...]
(no types: every text type coverage.py --all runs); `--mode layers` or `--mode hidden` moves only those sizes.
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
from graphsurgeon.export.codegen import model_source  # noqa: E402
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
        for k in ("hidden_size", "n_embd", "d_model"):
            if isinstance(cfg.get(k), int):
                out[k] = cfg[k] * 3 // 2
        if isinstance(cfg.get("intermediate_size"), int):
            out["intermediate_size"] = cfg["intermediate_size"] + 32
        if isinstance(cfg.get("vocab_size"), int):
            out["vocab_size"] = cfg["vocab_size"] + 11
    return out


def run_type(model_type: str, tmp: Path, mode: str) -> dict:
    row = {"type": model_type, "result": "", "count": "", "passed": False}
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in model_class(model_type)(tiny_config(model_type)).parameters())
        if n > MAX_PARAMS:  # as coverage.py --all: the benchmark's limit, not the model's
            row["result"] = f"not run: the tiny config has {n / 1e6:.0f} M parameters"
            return row
        folder = Path(save(model_type, tmp / model_type))
        cm = capture(str(folder))
        text = model_source(cm)
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
        hf_config = transformers.AutoConfig.for_model(**changed)
        hf_config._attn_implementation = cm.attn_implementation or "sdpa"
        torch.manual_seed(0)
        hf = getattr(transformers, cm.model_class)(hf_config).eval()
        ours = mod.Model(mod.Config.from_json(str(second / "config.json"))).eval()
        missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
        theirs = dict(hf.named_buffers())  # a buffer model.py reads from the weights file (no recipe computes it):
        kept = [k for k in missing if k in dict(ours.named_buffers()) and k in theirs]  # HF's value, as the file has
        for k in kept:
            ours.get_buffer(k).copy_(theirs[k])
        missing = [k for k in missing if k not in kept]
        if missing or unexpected:
            row["result"] = f"{len(missing)} parameters missing, {len(unexpected)} unexpected"
            return row
        x = {"input_ids": torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))}
        with torch.no_grad():
            want, got = hf(**x)[0], ours(**x)[0]
        if got.shape != want.shape:
            row["result"] = f"shape {tuple(got.shape)} vs HF {tuple(want.shape)}"
            return row
        diff = (got - want).abs().max().item()
        row["result"], row["passed"] = f"{diff:.1e}" + (f" ({len(kept)} buffers from the file)" if kept else ""), \
            diff <= TOL
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
        row = {"type": model_type, "result": f"its process ended without a result (exit {proc.exitcode})",
               "count": "", "passed": False}
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
            print(f"| {r['type']} | {'✓' if r['passed'] else '✗'} | {r['count']} | {r['result']} |", flush=True)
    passed = sum(r["passed"] for r in rows)
    ran = [r for r in rows if not r["result"].startswith("not run")]
    print(f"\n{passed} of {len(ran)} types run ({len(rows) - len(ran)} not run: tiny config too large): model.py "
          f"at the second config equals Hugging Face there (≤ {TOL:g}); "
          f"{sum(r['count'] == 'config' for r in rows)} read their layer count from the config; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
