"""Self-check benchmark: what the export's self-check (export/verify.py) adds to `graphsurgeon lora … --out`.

GPT-2 at its real size (the preset; seeded random weights unless the real ones are cached), LoRA r=8 on q and v of
every layer, exported with the check and without it (export.self_check replaced by a no-op), interleaved, in one
process. The command's work is capture + LoRA + export; the target is that the check adds ≤ 25 % to it.
Interpreter start and imports (seconds more for the command) are not counted, so the ratio is an upper bound.

Run: .venv/bin/python benchmarks/verify.py [--model gpt2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import graphsurgeon.export as export
from graphsurgeon.capture import capture
from graphsurgeon.export.verify import Check
from graphsurgeon.surgery import LoRAConfig, add_lora


@contextlib.contextmanager
def no_check(cm, folder):
    yield Check()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    checked = export.self_check
    times: dict[str, list[float]] = {"capture + LoRA": [], "export without check": [], "export with check": []}
    line = ""
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            t0 = time.perf_counter()
            cm = capture(args.model)
            add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=8, alpha=16))
            times["capture + LoRA"].append(time.perf_counter() - t0)
            for name, check in (("export without check", no_check), ("export with check", checked))[::1 - 2 * (i % 2)]:
                export.self_check = check
                t0 = time.perf_counter()
                result = export.export_folder(cm, os.path.join(tmp, f"{i}-{len(name)}"), random_weights=True)
                times[name].append(time.perf_counter() - t0)
                line = result.check or line
    export.self_check = checked
    med = {k: statistics.median(v) for k, v in times.items()}
    added = med["export with check"] - med["export without check"]
    command = med["capture + LoRA"] + med["export without check"]
    print(f"{args.model}, LoRA q,v r=8 on every layer, {args.repeat} runs (medians), load {os.getloadavg()[0]:.1f}")
    print(f"check: {line}")
    print("| measure | seconds |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| the check's added time | {added:.2f} |")
    print(f"| added / (capture + LoRA + export without check) | {added / command:.0%} (target ≤ 25 %) |")
    print(f"| added / export without check | {added / med['export without check']:.0%} |")


if __name__ == "__main__":
    main()
