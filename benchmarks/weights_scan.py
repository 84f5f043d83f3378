"""The non-finite weights scan against the load it guards: `ModelRecipe.build("cpu")` of a saved GPT-2 (headers,
dtypes, from_pretrained) vs `weights_values.nonfinite` over its parameters, median of interleaved runs, same process.

from_pretrained maps the safetensors file: its pages are read when a weight is first touched (by the scan, or by
the first forward / the export's copy when there is no scan). So the table gives the scan as the first touch (what
it costs inside `build`) and on resident weights (its own arithmetic), each against the load alone and against the
load plus one touch of every weight (what any use of the model pays).

Run: .venv/bin/python benchmarks/weights_scan.py [--layers 6] [--width 768] [--repeat 5]   (target: scan ≤ 10 % of load)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

from graphsurgeon.capture import resolve  # noqa: E402
from graphsurgeon.capture.weights_values import nonfinite  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2"
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=args.layers, n_embd=args.width,
                                                             n_head=12)).save_pretrained(folder)
        recipe = resolve(str(folder))
        loads, firsts, scans = [], [], []
        for _ in range(args.repeat):
            os.environ["GRAPHSURGEON_NO_SCAN"] = "1"  # build without its own scan: the pages stay untouched
            t0 = time.perf_counter()
            model = recipe.build("cpu")
            t1 = time.perf_counter()
            named = [*model.named_parameters(), *model.named_buffers()]
            nonfinite(named)  # the first touch of every page
            t2 = time.perf_counter()
            nonfinite(named)  # resident weights
            t3 = time.perf_counter()
            loads.append(t1 - t0), firsts.append(t2 - t1), scans.append(t3 - t2)
            del model, named
        os.environ.pop("GRAPHSURGEON_NO_SCAN")
        n = sum(p.numel() for p in recipe.build("meta").parameters())
    load, first, scan = (statistics.median(x) for x in (loads, firsts, scans))
    print(f"GPT-2 {args.layers} layers × {args.width} ({n / 1e6:.0f} M parameters, float32), median of {args.repeat}")
    print(f"{'measure':<58}{'seconds':>9}{'/ load':>9}{'/ load+touch':>14}{'target':>9}")
    print(f"{'load: headers, dtypes, from_pretrained (pages untouched)':<58}{load:>9.3f}")
    print(f"{'scan as the first touch of the weights':<58}{first:>9.3f}{first / load:>8.2f}×{first / (load + first):>13.2f}×")
    print(f"{'scan of resident weights':<58}{scan:>9.3f}{scan / load:>8.2f}×{scan / (load + first):>13.2f}×"
          f"{'≤ 0.10×':>9}")

if __name__ == "__main__":
    main()
