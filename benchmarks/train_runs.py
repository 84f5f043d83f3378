"""train.py's tokens/s, eager vs --compile, as it prints them (counted from the second step: the first compiles).

    PYTHONPATH=. .venv/bin/python benchmarks/train_runs.py [--steps 40]

Exports a small GPT-2 (hidden 64, 2 layers) with LoRA on q and v into a temporary folder, runs its train.py both
ways in fresh processes and prints a table: the printed tokens/s, the wall time of the run, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run(folder: Path, *args: str) -> tuple[float, float]:
    """(tokens/s of the last progress line, wall seconds) of one train.py run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "train.py", *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr)
    rates = re.findall(r"tokens/s ([\d,]+)", done.stdout)
    return float(rates[-1].replace(",", "")), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from graphsurgeon.capture import capture
    from graphsurgeon.export import export_folder
    from graphsurgeon.surgery import LoRAConfig, add_lora
    from surgery_models import build

    with tempfile.TemporaryDirectory() as tmp:
        cm = capture(build("gpt2"))
        add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=8, alpha=16))
        folder = Path(tmp) / "out"
        export_folder(cm, folder)
        common = ("--synthetic", "--steps", str(args.steps), "--batch-size", "8", "--seq-len", "64", "--device", "cpu")
        eager = run(folder, *common, "--run-name", "eager")
        compiled = run(folder, *common, "--run-name", "compiled", "--compile")
    print(f"| train.py, tiny GPT-2, {args.steps} steps, batch 8 × 64 (CPU) | eager | --compile | compile / eager |")
    print("|---|---|---|---|")
    print(f"| tokens/s printed (from step 2) | {eager[0]:,.0f} | {compiled[0]:,.0f} | {compiled[0] / eager[0]:.2f}× |")
    print(f"| wall time of the run (s, compilation included) | {eager[1]:.1f} | {compiled[1]:.1f} | "
          f"{compiled[1] / eager[1]:.2f}× |")


if __name__ == "__main__":
    main()
