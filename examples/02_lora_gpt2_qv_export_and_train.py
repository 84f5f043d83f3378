"""Example 2: LoRA on Q and V of every GPT-2 layer, export a standalone folder, train it, merge it.

Run:  .venv/bin/python examples/02_lora_gpt2_qv_export_and_train.py [--model gpt2] [--out runs/gpt2-qv] [--steps 20]

The exported folder needs only torch + safetensors: train.py runs in it without graphsurgeon.
"""

import argparse
import os
import subprocess
import sys
import tempfile

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-gpt2", help="a GPT-2 preset or local folder (default tiny-gpt2)")
    parser.add_argument("--out", default=None, help="export folder (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    cm = capture(args.model)
    entry = add_lora(cm, roles=("q", "v"), layers="all", config=LoRAConfig(r=8, alpha=16))
    print(f"{cm.model_class}: {entry.text} -> {len(cm.loras)} LoRA layers")

    out = args.out or os.path.join(tempfile.mkdtemp(prefix="graphsurgeon-"), "gpt2-qv")
    # a preset without cached weights has random weights: exporting them must be asked for (README.md says so)
    result = export_folder(cm, out, force=True, random_weights=True)
    print(f"exported to {result.folder} in {result.seconds:.1f} s: {', '.join(result.files)}")
    print(f"weights: {result.weights} ({result.weights_note})")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the folder runs without graphsurgeon
    train = ["train.py", "--synthetic", "--steps", str(args.steps), "--seq-len", "16", "--lr", "1e-2", "--run-name", "demo"]
    for cmd in (train, ["train.py", "--merge-only", os.path.join("runs", "demo")]):  # the export itself never changes
        print("$ python " + " ".join(cmd))
        subprocess.run([sys.executable, *cmd], cwd=out, env=env, check=True)
    print(f"merged Hugging Face folder: {os.path.join(out, 'runs', 'demo', 'merged')}")


if __name__ == "__main__":
    main()
