"""Export benchmark: the exported model.py against its peers, in one process, as median ratios of interleaved runs.

1. A GPT-2 (random weights; timing does not depend on them; 6 layers by default) with LoRA r=8 on q and v of
   every layer, exported: time to write the folder (target ≤ 10 s).
2. A training step (forward with labels → HF's causal-LM loss, backward, AdamW) of model.py vs PEFT with the same
   LoRA (the equivalent adapter on c_attn): eager vs eager (target ≤ 0.95×); with --compile also compiled vs
   compiled (≤ 1.0×) and model.py compiled vs PEFT eager (≤ 0.9×).
3. Inference (eval, no LoRA, `model(input_ids=x)`) of model.py vs the Hugging Face model (≤ 1.0×); and at one
   sequence of --long-seq tokens (512), where model.py's SDPA takes `is_causal=True` with no mask tensor (≤ 0.9×).
4. Per architecture of the test suite (tiny configs): model.py lines vs the HF modeling file, `torch.ops.aten`
   calls left in model.py (goal 0), classes written.

Run: .venv/bin/python benchmarks/export.py [--layers 6] [--seq 64] [--batch 4] [--long-seq 512] [--repeat 15]
     [--compile] [--no-code]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers as tf

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora

TINY = {  # the test suite's architectures, tiny (lines and op counts do not depend on sizes)
    "bert": lambda: tf.BertModel(tf.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                               intermediate_size=128, vocab_size=101)),
    "roberta": lambda: tf.RobertaModel(tf.RobertaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                        intermediate_size=128, vocab_size=101)),
    "distilbert": lambda: tf.DistilBertModel(tf.DistilBertConfig(n_layers=2, dim=64, n_heads=4, hidden_dim=128,
                                                                 vocab_size=101)),
    "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=101)),
    "bigcode": lambda: tf.GPTBigCodeForCausalLM(tf.GPTBigCodeConfig(n_layer=2, n_embd=64, n_head=16, vocab_size=101)),
    "opt": lambda: tf.OPTForCausalLM(tf.OPTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                  ffn_dim=128, word_embed_proj_dim=64, vocab_size=101)),
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                        num_key_value_heads=2, intermediate_size=128, vocab_size=101)),
}


def load_exported(folder: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_model(str(folder))


def clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def train_step(model, ids):
    """One step: forward with labels (the model's own HF loss), backward, AdamW on the trainable parameters."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        out = model(input_ids=ids, labels=ids)
        loss = out["loss"] if isinstance(out, dict) else out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def interleaved(a, b, repeat: int, warmup: int = 3) -> tuple[float, float, float]:
    """(median a seconds, median b seconds, median of the per-round ratios a/b)."""
    for _ in range(warmup):
        a(), b()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(clock(a))
        tb.append(clock(b))
    med = statistics.median
    return med(ta), med(tb), med([x / y for x, y in zip(ta, tb)])


def gpt2_rows(args) -> list[tuple]:
    from peft import PeftModel

    config = tf.GPT2Config(n_layer=args.layers, vocab_size=50257)
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(config).eval()
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    cm = capture(hf)
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=8, alpha=16))
    for block in cm.loras.values():  # non-zero B so the update is real
        torch.nn.init.normal_(cm.gm.get_submodule(block.module_path).lora_B.weight, std=0.01)
    root = Path(tempfile.mkdtemp(prefix="gs-bench-"))
    export_s = clock(lambda: export_folder(cm, root / "lora"))
    plain = capture(tf.GPT2LMHeadModel(config).eval())
    export_folder(plain, root / "plain")

    def hf_model():
        m = tf.GPT2LMHeadModel(config)
        m.load_state_dict(state)
        return m

    ours = load_exported(root / "lora", "bench_lora").train()
    for n, p in ours.named_parameters():
        p.requires_grad_(".lora_" in n)
    peft = PeftModel.from_pretrained(hf_model(), str(root / "lora"), is_trainable=True).train()
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # same model, same numbers: the comparison is fair
        assert (ours.eval()(input_ids=ids)["logits"] - peft.eval()(input_ids=ids).logits).abs().max() < 1e-4
    ours.train(), peft.train()
    rows = [("export folder (s)", export_s, None, None, "≤ 10 s")]
    a, b, r = interleaved(train_step(ours, ids), train_step(peft, ids), args.repeat)
    rows.append(("train step: model.py vs PEFT, eager (ms)", a, b, r, "≤ 0.95×"))
    if args.compile:
        ours_c, peft_c = torch.compile(ours), torch.compile(peft)
        a, b, r = interleaved(train_step(ours_c, ids), train_step(peft_c, ids), args.repeat)
        rows.append(("train step: compiled vs PEFT compiled (ms)", a, b, r, "≤ 1.0×"))
        a, b, r = interleaved(train_step(ours_c, ids), train_step(peft, ids), args.repeat)
        rows.append(("train step: compiled vs PEFT eager (ms)", a, b, r, "≤ 0.9×"))
    exported, original = load_exported(root / "plain", "bench_plain").eval(), hf_model().eval()
    with torch.no_grad():
        a, b, r = interleaved(lambda: exported(input_ids=ids), lambda: original(input_ids=ids), args.repeat)
    rows.append(("inference: model.py vs HF, eval (ms)", a, b, r, "≤ 1.0×"))
    long = torch.randint(0, config.vocab_size, (1, args.long_seq), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # nothing padded: model.py's SDPA runs with is_causal=True and no mask tensor
        a, b, r = interleaved(lambda: exported(input_ids=long), lambda: original(input_ids=long),
                              max(3, args.repeat // 3), warmup=1)
    rows.append((f"inference 1 × {args.long_seq}, is_causal: model.py vs HF (ms)", a, b, r, "≤ 0.9×"))
    return rows


def code_rows() -> list[tuple]:
    out = []
    for arch, make in TINY.items():
        model = make().eval()
        folder = Path(tempfile.mkdtemp(prefix=f"gs-bench-{arch}-")) / "out"
        export_folder(capture(model), folder)
        text = (folder / "model.py").read_text()
        hf_file = Path(inspect.getsourcefile(type(model)))
        classes = [name for name, base in re.findall(r"^class (\w+)\((.*)\)", text, re.M)
                   if not base.endswith(("Error", "Exception"))]  # modules, not WeightsError
        out.append((arch, len(text.splitlines()), len(hf_file.read_text().splitlines()), hf_file.name,
                    text.count("torch.ops.aten."), classes))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--long-seq", type=int, default=512, help="the sequence length of the is_causal inference row")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--compile", action="store_true", help="also compare torch.compile'd steps (slow to compile)")
    p.add_argument("--no-code", action="store_true", help="leave out the per-architecture code table")
    args = p.parse_args()
    rows = gpt2_rows(args)
    print(f"GPT-2 {args.layers} layers (random weights) · LoRA q,v r=8 on every layer · batch {args.batch} × seq "
          f"{args.seq} · {torch.get_num_threads()} threads · medians of {args.repeat} interleaved rounds · load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'measure':<56}{'model.py':>10}{'peer':>10}{'ratio':>9}{'target':>9}")
    for name, a, b, r, target in rows:
        if b is None:
            print(f"{name:<56}{a:>10.2f}{'':>10}{'':>9}{target:>9}")
        else:
            print(f"{name:<56}{1e3 * a:>10.1f}{1e3 * b:>10.1f}{r:>8.3f}×{target:>9}")
    if args.no_code:
        return
    print()
    print(f"{'arch':<11}{'model.py lines':>15}{'HF file lines':>15}  {'HF file':<24}{'aten calls':>11}  classes")
    for arch, lines, hf_lines, hf_name, aten, classes in code_rows():
        print(f"{arch:<11}{lines:>15}{hf_lines:>15}  {hf_name:<24}{aten:>11}  {len(classes)}: {', '.join(classes)}")


if __name__ == "__main__":
    main()
