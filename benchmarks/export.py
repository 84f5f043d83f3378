"""Export benchmark on gpt2 (random weights when none are cached; timing does not depend on them).

Prints: exporting gpt2 with LoRA q,v on all layers (target ≤ 10 s); a training step (forward, next-token loss,
backward, AdamW) of the exported model.py vs PEFT with the same LoRA (the equivalent adapter on c_attn), as the
median ratio of interleaved runs (target ≤ 1.05×); inference of the merged Hugging Face model vs the original
(target ≤ 1.02×). Run: .venv/bin/python benchmarks/export.py [model] [--seq 32] [--batch 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora


def load_exported(folder: Path):
    spec = importlib.util.spec_from_file_location("exported_bench", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_model(str(folder))


def clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_fn(model, params, ids, logits_of):
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        logits = logits_of(model(input_ids=ids))
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?", default="gpt2")
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    torch.manual_seed(0)
    cm = capture(args.model)
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=8, alpha=16))
    for path in cm.loras:  # non-zero B so the update is real
        torch.nn.init.normal_(cm.gm.get_submodule(cm.loras[path].module_path).lora_B.weight, std=0.01)
    out = Path(tempfile.mkdtemp(prefix="gs-bench-")) / "export"
    export_s = clock(lambda: export_folder(cm, out, random_weights=True))

    from peft import PeftModel
    from transformers import GPT2Config, GPT2LMHeadModel

    ours = load_exported(out).train()
    for n, prm in ours.named_parameters():
        prm.requires_grad_(".lora_" in n)

    def hf_base():
        m = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in cm.config.items() if k not in ("architectures",)}))
        from safetensors.torch import load_file
        sd = {k: v for k, v in load_file(str(out / "model.safetensors")).items() if ".lora_" not in k}
        m.load_state_dict(sd, strict=False)
        m.tie_weights()
        return m

    peft = PeftModel.from_pretrained(hf_base(), str(out), is_trainable=True).train()
    ids = torch.randint(0, cm.config.get("vocab_size", 50257), (args.batch, args.seq))
    ours_step = step_fn(ours, [q for q in ours.parameters() if q.requires_grad], ids, lambda o: o["logits"])
    peft_step = step_fn(peft, [q for q in peft.parameters() if q.requires_grad], ids, lambda o: o.logits)
    for _ in range(3):
        ours_step(), peft_step()
    ratios, t_ours, t_peft = [], [], []
    for _ in range(args.repeat):  # interleaved: both see the same machine state
        a, b = clock(ours_step), clock(peft_step)
        t_ours.append(a), t_peft.append(b), ratios.append(a / b)

    import subprocess
    import sys
    subprocess.run([sys.executable, "train.py", "--merge-only"], cwd=out, check=True, capture_output=True)
    merged = GPT2LMHeadModel.from_pretrained(str(out / "merged")).eval()
    original = hf_base().eval()
    inf_ratios, t_m, t_o = [], [], []
    with torch.no_grad():
        for _ in range(3):
            merged(input_ids=ids), original(input_ids=ids)
        for _ in range(args.repeat):
            a, b = clock(lambda: merged(input_ids=ids)), clock(lambda: original(input_ids=ids))
            t_m.append(a), t_o.append(b), inf_ratios.append(a / b)

    med = statistics.median
    print(f"model {args.model} · {len(cm.loras)} LoRA blocks (q,v r=8) · batch {args.batch} × seq {args.seq} · "
          f"{torch.get_num_threads()} threads")
    print(f"{'measure':<44}{'ours':>12}{'peer':>12}{'ratio':>9}{'target':>9}")
    print(f"{'export folder (s)':<44}{export_s:>12.2f}{'':>12}{'':>9}{'≤ 10 s':>9}")
    print(f"{'train step: model.py vs PEFT (ms, median)':<44}{1e3 * med(t_ours):>12.1f}{1e3 * med(t_peft):>12.1f}"
          f"{med(ratios):>8.3f}×{'≤ 1.05×':>9}")
    print(f"{'inference: merged vs original (ms, median)':<44}{1e3 * med(t_m):>12.1f}{1e3 * med(t_o):>12.1f}"
          f"{med(inf_ratios):>8.3f}×{'≤ 1.02×':>9}")


if __name__ == "__main__":
    main()
