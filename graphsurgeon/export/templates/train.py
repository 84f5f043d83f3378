"""Train the LoRA weights of the exported model (written by graphsurgeon; runs without it).

    python train.py --synthetic --steps 50
    python train.py --data my.txt            # tokenized with the tokenizer in this folder
    python train.py --data my.jsonl          # {"input_ids": [...], "label": 0} per line ("label" for classifiers)
    torchrun --nproc_per_node 2 train.py --synthetic --steps 50   # data-parallel (gloo on CPU, nccl on GPU)
    python train.py --merge-only             # fold the LoRA into the base weights -> merged/

Needs torch and safetensors; tokenizers or transformers only to tokenize a text file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lora_math  # noqa: E402  (the LoRA column maths, next to this file)
import model as exported  # noqa: E402  (model.py next to this file)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the LoRA weights of the exported model.")
    p.add_argument("--synthetic", action="store_true", help="random token ids (a smoke test of the set-up)")
    p.add_argument("--data", help="a text file (.txt) or JSONL of token ids (.jsonl)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--save-every", type=int, default=0, help="save the adapter every N steps (0: only at the end)")
    p.add_argument("--num-labels", type=int, default=2, help="classes of the classification head (encoders without MLM head)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge", action="store_true", help="after training, write merged/ with the LoRA folded in")
    p.add_argument("--merge-only", action="store_true", help="only write merged/ from the weights in this folder")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data

def vocab_size(model) -> int:
    cfg = os.path.join(HERE, "config.json")
    if os.path.exists(cfg):
        with open(cfg) as f:
            size = json.load(f).get("vocab_size")
        if size:
            return int(size)
    return max(p.shape[0] for n, p in model.named_parameters() if "embed" in n or "wte" in n)


def tokenize_text(path: str) -> list[int]:
    text = open(path, encoding="utf-8").read()
    if os.path.exists(os.path.join(HERE, "tokenizer.json")):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(os.path.join(HERE, "tokenizer.json")).encode(text).ids
    if os.path.exists(os.path.join(HERE, "tokenizer_config.json")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(HERE)(text)["input_ids"]
    fail(f"there is no tokenizer in {HERE}, so {path} cannot be tokenized; give JSONL of token ids instead "
         '({"input_ids": [...]} per line).')


def read_jsonl(path: str, vocab: int) -> list[tuple[list[int], int | None]]:
    """Examples (token ids, label or None); a malformed line stops with its line number."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ids = row["input_ids"]
                if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
                    raise ValueError(f"input_ids must be a non-empty list of integers in [0, {vocab})")
                label = row.get("label")
            except (ValueError, KeyError, TypeError) as err:
                fail(f"{path} line {number} is malformed ({err}); each line must be like "
                     '{"input_ids": [1, 2, 3]} (optionally with "label": 0).')
            examples.append((ids, label))
    if not examples:
        fail(f"{path} has no examples.")
    return examples


def load_examples(args, vocab: int) -> list[tuple[list[int], int | None]]:
    """Training examples of exactly seq-len tokens (text and unlabeled JSONL are concatenated and cut)."""
    if args.synthetic:
        gen = torch.Generator().manual_seed(args.seed)
        # a learnable synthetic task: short repeating patterns, so the loss visibly drops
        out = []
        for i in range(16):  # few sequences: 30 steps are enough to see the loss drop
            period = 2 + i % 3
            base = torch.randint(0, vocab, (period,), generator=gen).tolist()
            ids = (base * (args.seq_len // period + 1))[: args.seq_len]
            out.append((ids, ids[0] % args.num_labels))
        return out
    if not args.data:
        fail("give training data: --synthetic, --data file.txt or --data file.jsonl.")
    if not os.path.exists(args.data):
        fail(f"the data file {args.data} does not exist.")
    if args.data.endswith((".jsonl", ".json")):
        rows = read_jsonl(args.data, vocab)
    else:
        rows = [(tokenize_text(args.data), None)]
    if all(label is not None for _, label in rows):
        return [((ids + [0] * args.seq_len)[: args.seq_len], label) for ids, label in rows]
    stream = [i for ids, _ in rows for i in ids]
    n = len(stream) // args.seq_len
    if n == 0:
        fail(f"{args.data} has {len(stream)} tokens, fewer than one sequence of --seq-len {args.seq_len}.")
    return [(stream[k * args.seq_len:(k + 1) * args.seq_len], None) for k in range(n)]


# ----------------------------------------------------------------------------- loss

class ClassificationHead(torch.nn.Module):
    """>>> THE PLACE TO PUT YOUR TASK <<<  A small trainable head on the first token's hidden state.

    Used for encoders without an MLM head; labels come from the data ("label" in JSONL).
    Replace it (and `loss_fn`) with what your task needs.
    """

    def __init__(self, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(hidden, num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden[:, 0])


def loss_fn(model, head, ids: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    inputs = {"input_ids": ids}
    if "attention_mask" in exported.INPUTS:
        inputs["attention_mask"] = torch.ones_like(ids)
    if exported.MLM:  # mask 15% of the tokens, predict them
        mask = torch.rand(ids.shape, generator=gen).to(ids.device) < 0.15
        mask[:, 0] |= ~mask.any(1)
        inputs["input_ids"] = ids.masked_fill(mask, 0)
        logits = model(**inputs)["logits"]
        return F.cross_entropy(logits[mask], ids[mask])
    out = model(**inputs)
    if exported.CAUSAL_LM:  # next-token loss
        logits = out["logits"]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return F.cross_entropy(head(out[exported.OUTPUTS[0]]), labels)


# ----------------------------------------------------------------------------- saving

def lora_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}


def all_tensors(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer once (tied aliases left out, as in the exported file)."""
    sd = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in sd.items() if k not in exported.TIED}


def peft_adapter(model) -> tuple[dict[str, torch.Tensor], dict]:
    """The PEFT adapter: one LoRA per module; column sets of a fused module stacked into one exact adapter."""
    recipe = _recipe()
    groups: dict[str, list] = {}
    for block in recipe["loras"]:
        if block.get("mergeable", True):  # a LoRA added onto another value is no ΔW of a weight: not for PEFT
            groups.setdefault(block["target"]["module"], []).append(block)
    params = dict(model.named_parameters())
    tensors, modules, kind, dropout = {}, {}, "linear", 0.0
    for module, blocks in groups.items():
        kind, dropout = blocks[0]["target"]["kind"], blocks[0]["config"]["dropout"]
        w = params[module + ".weight"]
        a, b, scaling = lora_math.peft_tensors([_block(params, blk) for blk in blocks],
                                               w.shape[1] if kind == "conv1d" else w.shape[0])
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(w.dtype)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(w.dtype)
        modules[module] = (a.shape[0], scaling)
    return tensors, lora_math.peft_config(modules, dropout, kind == "conv1d", recipe.get("source"))


def _recipe() -> dict:
    with open(os.path.join(HERE, "surgery.json")) as f:
        return json.load(f)


def _block(params: dict, block: dict) -> dict:
    """A block of surgery.json as lora_math reads it: its trained A, B, columns and scaling."""
    path = _lora_path(block)
    return {"A": params[path + ".lora_A.weight"], "B": params[path + ".lora_B.weight"],
            "columns": block["target"]["columns"], "scaling": exported.LORAS[path]["scaling"]}


def _lora_path(block: dict) -> str:
    t = block["target"]
    return f"{t['module']}.{t['role']}" if t["columns"] else t["module"]


def save(model) -> None:
    """Both formats: model.safetensors (LoRA under <target>.lora_A.weight) and the PEFT adapter files."""
    save_file(all_tensors(model), os.path.join(HERE, "model.safetensors.tmp"))
    os.replace(os.path.join(HERE, "model.safetensors.tmp"), os.path.join(HERE, "model.safetensors"))
    tensors, config = peft_adapter(model)
    if not tensors:  # no block PEFT can hold (see README.md)
        return
    save_file(tensors, os.path.join(HERE, "adapter_model.safetensors"))
    with open(os.path.join(HERE, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def merge(model) -> str:
    """Write merged/: config.json + model.safetensors with every LoRA folded into its base weight."""
    base = {k: v.clone() for k, v in all_tensors(model).items() if ".lora_A." not in k and ".lora_B." not in k}
    recipe = _recipe()
    params = dict(model.named_parameters())
    unmergeable = [b["path"] for b in recipe["loras"] if not b.get("mergeable", True)]
    if unmergeable:
        fail(f"{', '.join(unmergeable)} add their LoRA onto another value than their projection's output, so they "
             "cannot be folded into a weight; nothing was merged (use model.py as it is).")
    for block in recipe["loras"]:
        t = block["target"]
        try:
            base[t["module"] + ".weight"] = lora_math.fold(base[t["module"] + ".weight"], _block(params, block),
                                                           fan_in_fan_out=t["kind"] == "conv1d")
        except ValueError:
            fail(f"the LoRA update of {_lora_path(block)} has non-finite values; nothing was merged.")
    out = os.path.join(HERE, "merged")
    os.makedirs(out, exist_ok=True)
    save_file(base, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(HERE, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out


# ----------------------------------------------------------------------------- training

def main(argv=None) -> None:
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    model = exported.load_model(HERE, device=str(device))
    if args.merge_only:
        print(f"merged model written to {merge(model)}")
        return
    torch.manual_seed(args.seed)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    head = None
    if not exported.CAUSAL_LM and not exported.MLM:
        hidden = next(p for n, p in model.named_parameters() if "embed" in n or "wte" in n).shape[-1]
        head = ClassificationHead(hidden, args.num_labels).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    n_train = sum(p.numel() for p in trainable)
    if rank == 0:
        print(f"trainable params: {n_train:,} || all params: {total:,} || trainable%: {100 * n_train / total:.4f}")
    if not trainable:
        fail("there are no LoRA weights to train in this model.")
    vocab = vocab_size(model)
    examples = load_examples(args, vocab)
    ids_all = torch.tensor([e[0] for e in examples])
    labels_all = torch.tensor([e[1] if e[1] is not None else 0 for e in examples])
    shard = torch.arange(rank, len(examples), world)  # DistributedSampler-style: rank r takes r, r+world, …
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(trainable, lr=args.lr)
    model.train()
    gen = torch.Generator().manual_seed(args.seed + 1 + rank)
    start, tokens, history, last = time.perf_counter(), 0, [], float('nan')
    for step in range(1, args.steps + 1):
        pick = shard[torch.randint(0, len(shard), (args.batch_size,), generator=gen)]
        ids, labels = ids_all[pick].to(device), labels_all[pick].to(device)
        loss = loss_fn(net, head, ids, labels, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += ids.numel() * world
        history.append(loss.item())
        last = history[-1]
        if rank == 0 and (step % max(1, args.steps // 20) == 0 or step == args.steps):
            rate = tokens / (time.perf_counter() - start)
            bar = "#" * int(20 * step / args.steps)
            print(f"[{bar:<20}] step {step}/{args.steps} loss {last:.4f} tokens/s {rate:,.0f}", flush=True)
        if args.save_every and step % args.save_every == 0 and rank == 0:
            save(model)
    if rank == 0:
        k = max(1, min(5, len(history) // 2))
        print(f"mean loss of the first {k} steps {sum(history[:k]) / k:.4f} -> last {k} steps {sum(history[-k:]) / k:.4f}")
        save(model)
        print("adapter saved: model.safetensors, adapter_model.safetensors, adapter_config.json")
        if args.merge:
            print(f"merged model written to {merge(model)}")
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if not math.isfinite(last):
        fail("the loss is not finite.")


if __name__ == "__main__":
    main()
