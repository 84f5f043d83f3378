"""Generation benchmark: model.py's generate() (its KV cache) against Hugging Face's generate() with its cache, in one
process, greedy, as medians of interleaved runs (target: model.py's tokens/s ≥ HF's).

A GPT-2 (random weights; 6 layers by default) exported with no LoRA; prompts of --prompt tokens, --new tokens
written (no eos, so every run writes them all), at batch 1 and 8. The two must write the same tokens.

Run: .venv/bin/python benchmarks/generate.py [--layers 6] [--prompt 16] [--new 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers as tf

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder


def load_exported(folder: Path):
    spec = importlib.util.spec_from_file_location("bench_generate", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_model(str(folder)).eval()


def timed(fn) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=args.layers, vocab_size=50257)).eval()
    hf.generation_config.eos_token_id = None  # no early stop: both write --new tokens
    folder = Path(tempfile.mkdtemp(prefix="gs-bench-generate-")) / "out"
    export_folder(capture(hf), folder)
    ours = load_exported(folder)
    print(f"GPT-2 {args.layers} layers (random weights) · greedy · prompt {args.prompt} · {args.new} new tokens · "
          f"{torch.get_num_threads()} threads · medians of {args.repeat} interleaved rounds · load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'batch':>5}{'model.py tok/s':>16}{'HF tok/s':>10}{'ratio':>8}{'target':>9}")
    for batch in (1, 8):
        ids = torch.randint(0, 50257, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
        run_ours = lambda: ours.generate(ids, max_new_tokens=args.new)  # noqa: E731
        run_hf = lambda: hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new,  # noqa: E731
                                     do_sample=False, pad_token_id=0)
        _, a = timed(run_ours)
        _, b = timed(run_hf)
        assert a.tolist() == b.tolist(), "model.py and HF wrote different tokens"
        ta, tb = [], []
        for _ in range(args.repeat):
            ta.append(timed(run_ours)[0])
            tb.append(timed(run_hf)[0])
        tokens = batch * args.new
        ours_tps, hf_tps = tokens / statistics.median(ta), tokens / statistics.median(tb)
        ratio = statistics.median([y / x for x, y in zip(ta, tb)])  # HF's time / ours = our speed / HF's
        print(f"{batch:>5}{ours_tps:>16.0f}{hf_tps:>10.0f}{ratio:>7.2f}×{'≥ 1.0×':>9}")


if __name__ == "__main__":
    main()
