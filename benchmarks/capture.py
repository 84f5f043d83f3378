"""Capture benchmark: graphsurgeon's capture + derive vs the bare torch.export call, view derivation, and
Llama-2-7B's architecture on the meta device (time and peak RSS, measured in a child process).

Run: .venv/bin/python benchmarks/capture.py   (prints a table; targets in the last column)
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.export import Dim  # noqa: E402

from graphsurgeon.capture import capture, resolve  # noqa: E402


def bare_export_gpt2() -> float:
    """The same model build + torch.export call that capture makes, and nothing else."""
    t0 = time.perf_counter()
    model = resolve("gpt2").build("meta")
    model.config.use_cache = False
    ids = torch.zeros(2, 10, dtype=torch.long, device="meta")
    torch.export.export(model, (), {"input_ids": ids}, dynamic_shapes={"input_ids": {0: Dim("batch", min=1, max=4096),
                        1: Dim("seq", min=2, max=1024)}}, strict=False)
    return time.perf_counter() - t0


def ours_gpt2() -> float:
    t0 = time.perf_counter()
    cm = capture("gpt2", meta=True)
    cm.blocks().view("")
    return time.perf_counter() - t0


def llama_child() -> None:
    """Runs in a child process: capture LlamaConfig() (7B) on meta; prints seconds and peak RSS in MB."""
    import transformers

    t0 = time.perf_counter()
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig()).eval()
    cm = capture(model)
    cm.blocks().view("model.layers.0.self_attn")
    dt = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{dt:.3f} {rss_mb:.0f} {cm.blocks().param_count(''):d}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--llama-child":
        llama_child()
        return
    bare_export_gpt2(), ours_gpt2()  # warm both paths (imports, first-call caches)
    bare, ours = [], []
    for _ in range(5):
        bare.append(bare_export_gpt2())
        ours.append(ours_gpt2())
    cm = capture("gpt2", meta=True)
    t0 = time.perf_counter()
    bg = cm.blocks()
    index_ms = (time.perf_counter() - t0) * 1000
    view_ms = []
    for _ in range(30):
        t0 = time.perf_counter()
        bg.view("transformer.h.0.attn")
        view_ms.append((time.perf_counter() - t0) * 1000)
    root_ms = []
    for _ in range(10):
        t0 = time.perf_counter()
        bg.view("transformer")
        root_ms.append((time.perf_counter() - t0) * 1000)
    out = subprocess.run([sys.executable, __file__, "--llama-child"], capture_output=True, text=True, check=True)
    llama_s, llama_mb, llama_params = out.stdout.split()

    b, o = statistics.median(bare), statistics.median(ours)
    rows = [
        ("bare torch.export of gpt2 (meta), median of 5", f"{b:.2f} s", "peer"),
        ("capture + derive root view of gpt2 (meta), median of 5", f"{o:.2f} s", ""),
        ("  ratio capture+derive / bare export", f"{o / b:.2f}x", "<= 1.3x"),
        ("index the graph once (BlockGraph)", f"{index_ms:.1f} ms", ""),
        ("derive transformer.h.0.attn view, median of 30", f"{statistics.median(view_ms):.2f} ms", "<= 20 ms"),
        ("derive the largest level (transformer, 12 layers), median", f"{statistics.median(root_ms):.2f} ms", ""),
        (f"Llama-2-7B architecture on meta ({int(llama_params) / 1e9:.2f}B params): time", f"{float(llama_s):.2f} s", "<= 15 s"),
        ("Llama-2-7B architecture on meta: peak RSS of the process", f"{float(llama_mb) / 1024:.2f} GB", "<= 1.5 GB"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(w)}  {'value':>10}  target")
    for name, value, target in rows:
        print(f"{name.ljust(w)}  {value:>10}  {target}")


if __name__ == "__main__":
    main()
