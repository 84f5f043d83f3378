"""The non-finite weights check against the load it guards, under each definition of "load time", in one process.

What a user waits for when graphsurgeon opens a folder is `build_model(folder)`: config.json read, the model built
on meta, the safetensors headers checked, transformers' `from_pretrained` (which maps the file lazily: no weight
byte is read) and the NaN / inf check (capture/sources.py `_judge_values`: one sum per tensor of the loaded model, on
one thread — the first read of the mapped bytes). Without the check the bytes are first read by the model's first
forward, so the table also
times load + one forward (1 × 16 tokens), and both with a cold page cache (the weight file evicted with
posix_fadvise(DONTNEED) before each run). `--capture` adds load + capture (what `graphsurgeon inspect` does after
its imports). Rows are medians of interleaved runs (the order alternates): without the check
(GRAPHSURGEON_NO_SCAN=1) and with it.
Then the check's own throughput against plain reads of the same bytes (warm, already mapped, one thread).
Wall seconds need idle cores to overlap the scan with the load; CPU seconds (process time, all threads) say what the
check costs the machine. The load average is printed.

Run: .venv/bin/python benchmarks/weights_scan.py [--layers 6] [--width 768] [--repeat 7] [--capture]
(target: the check ≤ 10 % of load time)
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch
import transformers

from graphsurgeon.capture import build_model, capture

MODES = ("without", "with")


def _evict(folder: Path) -> None:
    """Drop the weight files from the page cache (no root needed; pages still mapped by a live model stay)."""
    for f in folder.glob("*.safetensors"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _load(folder: Path, mode: str):
    if mode != "with":
        os.environ["GRAPHSURGEON_NO_SCAN"] = "1"
    try:
        return build_model(str(folder))
    finally:
        os.environ.pop("GRAPHSURGEON_NO_SCAN", None)


def _step(folder: Path, mode: str, what: str, ids) -> None:
    model = _load(folder, mode)
    if what == "forward":
        with torch.no_grad():
            model(input_ids=ids)
    elif what == "capture":
        capture(str(folder), model=model)


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _throughput(file: Path, repeat: int) -> list[tuple[str, float, float]]:
    """(what, wall GB/s, CPU GB/s) of one-thread passes over the file's tensor bytes, warm and mapped."""
    with file.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        json.loads(fh.read(n))
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    size = (len(data) - 8 - n) // 8 * 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f32 = torch.frombuffer(data, dtype=torch.float32, count=size // 4, offset=8 + n)
    u64 = np.frombuffer(data, dtype=np.uint64, count=size // 8, offset=8 + n)
    out = torch.empty_like(f32)
    passes = {
        "the check: float32 sum (NaN / inf propagate)": lambda: f32.sum(dtype=torch.float32),
        "plain read: uint64 OR-reduce (numpy)": lambda: np.bitwise_or.reduce(u64),
        "plain read: int32 max (the exponent bits' view)": lambda: f32.view(torch.int32).max(),
        "copy of the bytes (read + write)": lambda: out.copy_(f32),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name, fn in passes.items():
            fn()
            times = [_timed(fn) for _ in range(repeat)]
            w, c = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
            rows.append((name, size / w / 1e9, size / max(c, 1e-9) / 1e9))
    finally:
        torch.set_num_threads(threads)
    return rows  # the map closes when the tensors viewing it are collected


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--capture", action="store_true", help="also time load + capture (slow: a few s per run)")
    args = ap.parse_args()
    whats = ["load", "forward"] + (["capture"] if args.capture else [])
    ids = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2"
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=args.layers, n_embd=args.width,
                                                             n_head=12)).save_pretrained(folder)
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        _step(folder, "with", "forward", ids)  # warm: imports, first-call costs
        rows: dict[tuple, list] = {}
        for r in range(args.repeat if not args.capture else max(3, args.repeat // 2)):
            for what in whats:
                for cold in (False, True):
                    if what == "capture" and cold:
                        continue
                    for mode in MODES if r % 2 == 0 else MODES[::-1]:
                        gc.collect()
                        if cold:
                            _evict(folder)
                        rows.setdefault((what, cold, mode), []).append(
                            _timed(lambda m=mode, w=what: _step(folder, m, w, ids)))
        speed = _throughput(next(folder.glob("*.safetensors")), args.repeat)
    label = {"load": "load (build_model)", "forward": "load + first forward", "capture": "load + capture"}
    print(f"GPT-2 {args.layers} layers × {args.width}, {size / 1e6:.0f} MB of float32 weights; medians of interleaved "
          f"runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'step':<34}{'cache':<7}{'without':>9}{'with':>9}{'added':>9}{'/ step':>8}   (ms)")
    for what in whats:
        for cold in (False, True):
            if (what, cold, "with") not in rows:
                continue
            for i, unit in ((0, "wall"), (1, "cpu")):
                m = {mode: statistics.median(t[i] for t in rows[(what, cold, mode)]) * 1e3 for mode in MODES}
                add = m["with"] - m["without"]
                print(f"{label[what] + ' (' + unit + ')':<34}{'cold' if cold else 'warm':<7}{m['without']:>9.0f}"
                      f"{m['with']:>9.0f}{add:>9.0f}{add / m['without']:>7.2f}×")
    print("target: added ≤ 0.10× of the step")
    print(f"\n{'one-thread pass over the same bytes (warm)':<52}{'wall GB/s':>10}{'CPU GB/s':>10}")
    for name, w, c in speed:
        print(f"{name:<52}{w:>10.1f}{c:>10.1f}")


if __name__ == "__main__":
    main()
