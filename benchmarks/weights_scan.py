"""The non-finite weights check against the load it guards: `ModelRecipe.build("cpu")` of a saved GPT-2 (headers,
dtypes, from_pretrained) with its NaN / inf check vs the same build without it (GRAPHSURGEON_NO_SCAN=1), median of
interleaved runs in one process.

The check is a scan of the weight files on a worker thread that runs while the model loads (capture/weights_values.py
FileScan); what it adds to the load is the wait for that thread plus the scan of the tensors it cannot vouch for.
For reference, the table also gives a separate scan of every parameter after the load (the check before this one).
Wall seconds need a free core to overlap; CPU seconds (process time, all threads) say what the scan costs the machine.
The load average is printed: on a machine busy with other work the overlap shrinks.

Run: .venv/bin/python benchmarks/weights_scan.py [--layers 6] [--width 768] [--repeat 7]   (target: check ≤ 10 % of load)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
import transformers

from graphsurgeon.capture import resolve
from graphsurgeon.capture.weights_values import nonfinite


def _timed(fn) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2"
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=args.layers, n_embd=args.width,
                                                             n_head=12)).save_pretrained(folder)
        recipe = resolve(str(folder))
        rows: dict[str, list[tuple[float, float]]] = {"without": [], "with": [], "after": []}
        recipe.build("cpu")  # warm: imports, page cache
        for _ in range(args.repeat):
            os.environ["GRAPHSURGEON_NO_SCAN"] = "1"
            w, c, model = _timed(lambda: recipe.build("cpu"))
            rows["without"].append((w, c))
            w, c, _ = _timed(partial(nonfinite, [*model.named_parameters(), *model.named_buffers()]))
            rows["after"].append((w, c))
            del model
            os.environ.pop("GRAPHSURGEON_NO_SCAN")
            w, c, _ = _timed(lambda: recipe.build("cpu"))
            rows["with"].append((w, c))
        n = sum(p.numel() for p in recipe.build("meta").parameters())
    wall = {k: statistics.median(w for w, _ in v) for k, v in rows.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in rows.items()}
    print(f"GPT-2 {args.layers} layers × {args.width} ({n / 1e6:.0f} M parameters, float32), median of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'measure':<52}{'wall s':>8}{'/ load':>9}{'cpu s':>8}{'/ load':>9}{'target':>9}")
    print(f"{'load without the check (GRAPHSURGEON_NO_SCAN=1)':<52}{wall['without']:>8.3f}{'':>9}{cpu['without']:>8.3f}")
    print(f"{'load with the check (file scan during the load)':<52}{wall['with']:>8.3f}{'':>9}{cpu['with']:>8.3f}")
    dw, dc = wall["with"] - wall["without"], cpu["with"] - cpu["without"]
    print(f"{'  what the check adds':<52}{dw:>8.3f}{dw / wall['without']:>8.2f}×{dc:>8.3f}"
          f"{dc / cpu['without']:>8.2f}×{'≤ 0.10×':>9}")
    print(f"{'a separate scan of every parameter after the load':<52}{wall['after']:>8.3f}"
          f"{wall['after'] / wall['without']:>8.2f}×{cpu['after']:>8.3f}{cpu['after'] / cpu['without']:>8.2f}×")


if __name__ == "__main__":
    main()
