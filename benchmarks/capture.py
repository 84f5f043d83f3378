"""Capture benchmark: graphsurgeon's capture + derive vs the bare torch.export call, view derivation, and
Llama-2-7B's architecture on the meta device (time and peak RSS, measured in a child process).

Depth (issue 22, capture one block per layer kind and replicate the rest): `inspect --meta` of the Llama-3-70B
architecture (a config folder; wall time of the whole command in a new process, and its peak RSS) replicated vs
traced layer by layer (the peer, `replicate=False`), capture time against depth (2 → 80 layers of that
architecture, one warm process), and `inspect --meta --tree` of a 5,000-layer config.

Run: .venv/bin/python benchmarks/capture.py            (prints a table; targets in the last column)
     .venv/bin/python benchmarks/capture.py --depth    (the depth rows only)
     .venv/bin/python benchmarks/capture.py --sweep    (capture CPU time against depth only)
     .venv/bin/python benchmarks/capture.py --fake-cache   (the 2-layer 70B export with torch's fake-tensor cache on/off)
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


LLAMA3_70B = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                  architectures=["LlamaForCausalLM"])


def _config_folder(root: str, name: str, **fields) -> str:
    import transformers

    folder = os.path.join(root, name)
    transformers.LlamaConfig(**fields).save_pretrained(folder)
    return folder


def inspect_child(folder: str, replicate: bool) -> None:
    """Runs in a child: what `graphsurgeon inspect FOLDER --meta` does (capture, derive the root view); peak RSS in MB."""
    cm = capture(folder, meta=True, replicate=replicate)
    cm.blocks().view("")
    print(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} {cm.replicated or '-'}")


def _timed_child(*args: str, timeout: int = 900) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, timeout=timeout)
    return time.perf_counter() - t0, out.stdout.strip()


def _timed_cli(*args: str) -> float:
    """Wall seconds of `python -m graphsurgeon ARGS` in a new process (imports, capture, output, exit)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "graphsurgeon", *args], capture_output=True, text=True, check=True, timeout=900)
    return time.perf_counter() - t0


def depth_sweep(layers: list[int], repeat: int = 3) -> dict[int, float]:
    """capture() CPU seconds of the Llama-3-70B architecture on meta at each depth, in this (warm) process: the
    median of `repeat` rounds over the depths (CPU time: the machine is shared, so wall time is mostly waiting)."""
    import transformers

    fields = {k: v for k, v in LLAMA3_70B.items() if k != "architectures"}
    capture(_meta_llama(transformers, fields, 2))  # warm
    times: dict[int, list[float]] = {n: [] for n in layers}
    for _ in range(repeat):
        for n in layers:
            model = _meta_llama(transformers, fields, n)
            t0 = time.process_time()
            capture(model)
            times[n].append(time.process_time() - t0)
    return {n: statistics.median(t) for n, t in times.items()}


def _meta_llama(transformers, fields: dict, layers: int):
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**fields, "num_hidden_layers": layers})).eval()


def fake_cache_rows(repeat: int = 3) -> list[tuple[str, str, str]]:
    """The 2-layer twin of the Llama-3-70B architecture exported with dynamic (batch, seq) as capture exports it
    (fake-tensor cache off) and with torch's default (cache on, the peer), alternately in this process; CPU s."""
    import transformers

    fields = {k: v for k, v in LLAMA3_70B.items() if k != "architectures"}
    model = _meta_llama(transformers, fields, 2)
    model.config.use_cache = False
    ids = torch.zeros(2, 10, dtype=torch.long, device="meta")
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch, seq = Dim("batch", min=1, max=4096), Dim("seq", min=2, max=8192)
    dynamic = {k: {0: batch, 1: seq} for k in inputs}

    def export(cache: bool) -> float:
        t0 = time.process_time()
        with torch._dynamo.config.patch(fake_tensor_cache_enabled=cache):
            torch.export.export(model, (), inputs, dynamic_shapes=dynamic, strict=False)
        return time.process_time() - t0

    export(False)  # warm
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeat):
        for cache in (True, False):
            times[cache].append(export(cache))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    return [
        ("2-layer 70B twin export, fake-tensor cache on (torch default, peer)", f"{on:.2f} CPU s", "peer"),
        ("2-layer 70B twin export, cache off (what capture does)", f"{off:.2f} CPU s", ""),
        ("  ratio off / on", f"{off / on:.2f}x", ""),
    ]


def depth_rows() -> list[tuple[str, str, str]]:
    import tempfile

    root = tempfile.mkdtemp(prefix="graphsurgeon-bench-")
    big = _config_folder(root, "llama3-70b", **LLAMA3_70B)
    cli = [_timed_cli("inspect", big, "--meta") for _ in range(3)]  # the command a user runs, as they run it
    rep_s, rep_out = _timed_child("--inspect-child", big, "1")  # the same work in a child that reports its peak RSS
    full_s, full_out = _timed_child("--inspect-child", big, "0")
    rep_mb, full_mb = float(rep_out.split()[0]), float(full_out.split()[0])
    sweep = depth_sweep([2, 10, 20, 40, 80])
    deep = _config_folder(root, "deep5000", hidden_size=256, intermediate_size=512, num_hidden_layers=5000,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512,
                          architectures=["LlamaForCausalLM"])
    env = {**os.environ, "GRAPHSURGEON_PROGRESS": "1"}
    t0 = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-m", "graphsurgeon", "inspect", deep, "--meta", "--tree", "--depth", "1"],
                             capture_output=True, text=True, env=env, timeout=600)
        deep_s, progress = f"{time.perf_counter() - t0:.1f} s", len([ln for ln in run.stderr.splitlines() if " … " in ln])
        deep_s += "" if run.returncode == 0 else f" (exit {run.returncode})"
    except subprocess.TimeoutExpired as err:
        deep_s = "> 600 s"
        progress = len([ln for ln in (err.stderr or b"").decode().splitlines() if " … " in ln])
    return [
        ("Llama-3-70B arch: `graphsurgeon inspect --meta`, new process, median of 3", f"{statistics.median(cli):.2f} s",
         "<= 5 s"),
        ("Llama-3-70B arch: capture + root view, replicated (new process, this script)", f"{rep_s:.1f} s", ""),
        ("Llama-3-70B arch: inspect --meta, every layer traced (peer)", f"{full_s:.1f} s", "peer"),
        ("  ratio replicated / traced", f"{rep_s / full_s:.2f}x", ""),
        ("Llama-3-70B arch: peak RSS replicated / traced", f"{rep_mb / 1024:.2f} / {full_mb / 1024:.2f} GB", "<= 0.6 GB"),
        *[(f"capture() of the 70B arch at {n} layers (warm, median of 3)", f"{t:.2f} CPU s", "") for n, t in sweep.items()],
        ("  ratio 80 layers / 2 layers", f"{sweep[80] / sweep[2]:.2f}x", "<= 1.2x"),
        ("5,000-layer config: inspect --meta --tree (new process)", deep_s, "<= 30 s"),
        ("  progress lines on stderr (GRAPHSURGEON_PROGRESS=1)", f"{progress}", ">= 1"),
    ]


def print_rows(rows) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(w)}  {'value':>14}  target")
    for name, value, target in rows:
        print(f"{name.ljust(w)}  {value:>14}  {target}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--llama-child":
        llama_child()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--inspect-child":
        inspect_child(sys.argv[2], sys.argv[3] == "1")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--depth":
        print_rows(fake_cache_rows() + depth_rows())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--sweep":  # the capture-time-vs-layers rows alone
        sweep = depth_sweep([2, 10, 20, 40, 80])
        print_rows([*[(f"capture() of the 70B arch at {n} layers (warm, median of 3)", f"{t:.2f} CPU s", "")
                      for n, t in sweep.items()], ("  ratio 80 layers / 2 layers", f"{sweep[80] / sweep[2]:.2f}x", "<= 1.2x")])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--fake-cache":
        print_rows(fake_cache_rows())
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
        *depth_rows(),
    ]
    print_rows(rows)


if __name__ == "__main__":
    main()
