"""Train the LoRA weights of the exported model (written by graphsurgeon; runs without it).

    python train.py --synthetic --steps 50
    python train.py --data my.txt            # tokenized with the tokenizer in this folder
    python train.py --data my.jsonl          # {"input_ids": [...]} per line, with "label" for classifiers
    python train.py --synthetic --device cuda --bf16 --compile --grad-checkpoint
    torchrun --nproc_per_node 2 train.py --synthetic --steps 50          # data-parallel (DDP)
    torchrun --nproc_per_node 2 train.py --synthetic --steps 50 --fsdp   # sharded (FSDP2, one unit per block)
    python train.py --merge-only             # fold the LoRA into the base weights -> merged/

Rows shorter than --seq-len are padded on the right; the attention mask and the labels (-100) leave the padding
out. The loss is the one the exported model computes from `labels` as Hugging Face does (next-token, masked-LM,
classification); a model without a head gets the small ClassificationHead below, saved to classifier_head.safetensors.
Needs torch and safetensors; tokenizers or transformers only to tokenize a text file or to find the mask token.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

try:
    from safetensors.torch import load_file, save_file
except ImportError:  # weights are read and written as safetensors, never pickle
    raise ImportError("train.py needs the safetensors package: pip install safetensors") from None

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lora_math  # noqa: E402  (the LoRA column maths, next to this file)
import model as exported  # noqa: E402  (model.py next to this file)
from train_data import (_token_id, batch, fail, load_examples, max_positions, special_ids,  # noqa: E402
                        vocab_size)

HEAD_FILE = os.path.join(HERE, "classifier_head.safetensors")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line ("error: argument --device: invalid choice: 'tpu' …"), exit status 2."""

    def error(self, message: str):
        fail(f"{message}; see `python train.py --help`.")


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description="Train the LoRA weights of the exported model.")
    p.add_argument("--synthetic", action="store_true", help="random token ids (a smoke test of the set-up)")
    p.add_argument("--data", help="a text file (.txt) or JSONL of token ids (.jsonl)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--save-every", type=int, default=0, help="save every N steps (0: only at the end)")
    p.add_argument("--num-labels", type=int, default=2, help="classes of the classification head (models without a head)")
    p.add_argument("--mask-token-id", type=int, help="the [MASK] token id for masked-LM training (default: the tokenizer's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--bf16", action="store_true", help="autocast the forward to bfloat16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute each block's activations in backward")
    p.add_argument("--fsdp", action="store_true", help="under torchrun: shard with FSDP2 (fully_shard per block) instead of DDP")
    p.add_argument("--merge", action="store_true", help="after training, write merged/ with the LoRA folded in")
    p.add_argument("--merge-only", action="store_true", help="only write merged/ from the weights in this folder")
    args = p.parse_args(argv)
    for name in ("batch_size", "seq_len", "num_labels"):
        if getattr(args, name) < (2 if name == "seq_len" else 1):
            fail(f"--{name.replace('_', '-')} must be at least {2 if name == 'seq_len' else 1} (got {getattr(args, name)}).")
    if args.steps < 0:
        fail(f"--steps {args.steps} is not allowed: give 0 or more (0: no training, e.g. with --merge).")
    if not 0 < args.lr < float("inf"):
        fail(f"--lr {args.lr} is not allowed: give a positive finite learning rate (e.g. 1e-4).")
    if args.seq_len > max_positions():
        fail(f"--seq-len {args.seq_len} is longer than the model's {max_positions()} positions; use at most {max_positions()}.")
    return args


# ----------------------------------------------------------------------------- the task

def loss_type() -> str | None:
    """The loss the exported model computes from labels (Hugging Face's), or None: no head, train one here."""
    return (getattr(exported, "LOSS", None) or {}).get("loss_type")


class ClassificationHead(torch.nn.Module):
    """>>> THE PLACE TO PUT YOUR TASK <<<  For a model without a head: a linear classifier on the mean of the
    hidden states of the real (not padded) tokens. Labels come from the data ("label" in JSONL)."""

    def __init__(self, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(hidden, num_labels)

    def forward(self, hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        w = attention.unsqueeze(-1).to(hidden.dtype)
        return self.classifier((hidden * w).sum(1) / w.sum(1).clamp(min=1))


class Task(torch.nn.Module):
    """The model (and the head, when it has none of its own) -> the training loss of one batch."""

    def __init__(self, model: torch.nn.Module, head: ClassificationHead | None) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.takes_mask = "attention_mask" in inspect.signature(model.forward).parameters

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        inputs = {"input_ids": ids, **({"attention_mask": attention} if self.takes_mask else {})}
        if self.head is None:
            return self.model(**inputs, labels=labels)["loss"]
        out = self.model(**inputs)
        hidden = next(v for v in out.values() if v.dim() == 3)
        return F.cross_entropy(self.head(hidden, attention).float(), labels)


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


def save_head(head: ClassificationHead) -> None:
    """classifier_head.safetensors: the head this script trains for a model without one (keys classifier.*)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, HEAD_FILE + ".tmp", metadata={"pooling": "mean of the real tokens' hidden states"})
    os.replace(HEAD_FILE + ".tmp", HEAD_FILE)


def load_head(head: ClassificationHead) -> bool:
    """Load classifier_head.safetensors into `head` when it exists (one sentence when it does not fit)."""
    if not os.path.exists(HEAD_FILE):
        return False
    try:
        tensors = load_file(HEAD_FILE)
        labels = tensors["classifier.weight"].shape[0]
    except Exception as err:  # noqa: BLE001 - a broken file is one sentence
        fail(f"{HEAD_FILE} is not a classification head written by this script ({str(err).splitlines()[0][:120]}); "
             "delete it to start a new head.")
    if tuple(tensors["classifier.weight"].shape) != tuple(head.classifier.weight.shape):
        fail(f"{HEAD_FILE} holds a head for {labels} labels over {tensors['classifier.weight'].shape[1]} features; "
             f"pass --num-labels {labels}, or delete the file to start a new head.")
    head.load_state_dict(tensors)
    return True


# ----------------------------------------------------------------------------- scaling

def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks: children of a ModuleList that have a forward of their own."""
    return [m for lst in model.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst
            if type(m).forward is not torch.nn.Module.forward]


def checkpoint_blocks(model: torch.nn.Module) -> int:
    """Recompute each block's activations in backward instead of keeping them (--grad-checkpoint)."""
    from torch.utils.checkpoint import checkpoint

    found = blocks(model)
    for block in found:
        block.forward = (lambda fwd: lambda *a, **k: checkpoint(fwd, *a, use_reentrant=False, **k))(block.forward)
    return len(found)


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict as plain CPU tensors (under FSDP every rank must call this: it gathers the shards)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.full_tensor() if hasattr(v, "full_tensor") else v
        out[k] = v.detach().cpu()
    return out


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """An unsharded CPU copy of `model` (trained weights included) for saving and merging."""
    state = full_state(model)
    copy = exported.load_model(HERE, device="cpu")
    copy.load_state_dict(state, strict=False)
    return copy


def wrap(task: Task, args, device: torch.device, world: int) -> torch.nn.Module:
    """DDP or FSDP2 under torchrun, then torch.compile when asked."""
    if world > 1 and args.fsdp:
        from torch.distributed.fsdp import fully_shard

        units = blocks(task.model)
        for block in units:
            fully_shard(block)
        fully_shard(task)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"FSDP2: {len(units)} blocks and the rest of the model sharded over {world} processes")
    elif world > 1:
        task = torch.nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(task) if args.compile else task


# ----------------------------------------------------------------------------- training

def pick_device(args) -> torch.device:
    want = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked but this torch has no CUDA device; use --device cpu.")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if want == "cuda" else "cpu")


def main(argv=None) -> None:
    args = parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if args.fsdp and world == 1:
        fail("--fsdp shards the model across processes: run it under torchrun (--nproc_per_node 2 or more).")
    device = pick_device(args)
    try:
        model = exported.load_model(HERE, device=str(device))
    except getattr(exported, "WeightsError", ValueError) as err:
        fail(str(err))
    if args.merge_only:
        print(f"merged model written to {merge(model)}")
        return
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(args.seed)
    kind = loss_type()
    args.problem_type = (getattr(exported, "LOSS", None) or {}).get("problem_type")
    if kind and "Classification" in kind:  # the model's own head decides the number of labels
        args.num_labels = exported.LOSS["num_labels"]
    backbone = max(model.named_children(), key=lambda c: sum(p.numel() for p in c[1].parameters()))[0]
    for name, p in model.named_parameters():  # LoRA, and a classifier head of the model's own (its task is new)
        p.requires_grad_(".lora_A." in name or ".lora_B." in name or (
            kind in ("ForSequenceClassification", "ForTokenClassification") and not name.startswith(backbone + ".")))
    vocab = vocab_size(model)
    special = {"pad": _token_id("pad") or 0, "never": special_ids(), "vocab": vocab, "mask": args.mask_token_id}
    if kind == "ForMaskedLM":
        special["mask"] = special["mask"] if special["mask"] is not None else _token_id("mask")
        if special["mask"] is None:
            fail("masked-LM training needs the [MASK] token id: put the tokenizer files next to model.py or pass --mask-token-id.")
        if special["mask"] in special["never"] or not 0 <= special["mask"] < vocab:
            fail(f"--mask-token-id {special['mask']} is padding, a special token or outside the vocabulary; give the [MASK] id.")
    examples = load_examples(args, vocab)
    head = None
    if kind is None:
        with torch.no_grad():
            out = model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device))
        head = ClassificationHead(next(v for v in out.values() if v.dim() == 3).shape[-1], args.num_labels).to(device)
        if load_head(head) and rank == 0:
            print(f"classification head loaded from {HEAD_FILE}")
    if (kind is None or "Classification" in kind) and any(label is None for _, label in examples):
        fail(f"{args.data} has rows without a label; this model trains a classifier, so give \"label\" on every line.")
    task = Task(model, head).to(device)
    trainable = [p for p in task.parameters() if p.requires_grad]
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    n_train = sum(p.numel() for p in trainable)
    if rank == 0:
        print(f"trainable params: {n_train:,} || all params: {total:,} || trainable%: {100 * n_train / total:.4f}")
    if not trainable:
        fail("there are no LoRA weights to train in this model.")
    if args.grad_checkpoint and rank == 0:
        print(f"gradient checkpointing: {checkpoint_blocks(model)} blocks")
    elif args.grad_checkpoint:
        checkpoint_blocks(model)
    net = wrap(task, args, device, world)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=args.lr)
    shard = torch.arange(rank, len(examples), world)  # DistributedSampler-style: rank r takes r, r+world, …
    task.train()
    gen = torch.Generator().manual_seed(args.seed + 1 + rank)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    start, tokens, history, last = time.perf_counter(), 0, [], float("nan")
    for step in range(1, args.steps + 1):
        pick = shard[torch.randint(0, len(shard), (args.batch_size,), generator=gen)].tolist()
        ids, attention, labels = batch(examples, pick, kind, special, gen)
        with autocast:
            loss = net(ids.to(device), attention.to(device), labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int(attention.sum()) * world
        history.append(loss.item())
        last = history[-1]
        if rank == 0 and (step % max(1, args.steps // 20) == 0 or step == args.steps):
            rate = tokens / (time.perf_counter() - start)
            print(f"[{'#' * int(20 * step / args.steps):<20}] step {step}/{args.steps} loss {last:.4f} tokens/s {rate:,.0f}",
                  flush=True)
        if args.save_every and step % args.save_every == 0:
            save_all(task, head, rank, world)
    if history and rank == 0:
        k = max(1, min(5, len(history) // 2))
        print(f"mean loss of the first {k} steps {sum(history[:k]) / k:.4f} -> last {k} steps {sum(history[-k:]) / k:.4f}")
    saved = save_all(task, head, rank, world)
    if rank == 0:
        print("saved: model.safetensors, adapter_model.safetensors, adapter_config.json"
              + (", classifier_head.safetensors" if head is not None else ""))
        if args.merge:
            print(f"merged model written to {merge(saved)}")
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if history and not math.isfinite(last):
        fail("the loss is not finite.")


def save_all(task: Task, head, rank: int, world: int) -> torch.nn.Module | None:
    """Every rank gathers (FSDP), rank 0 writes model.safetensors, the PEFT adapter and the head; returns the copy."""
    sharded = world > 1 and any(hasattr(p, "full_tensor") for p in task.model.parameters())
    model = plain_model(task.model) if sharded else task.model
    if head is not None and sharded:
        head_state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in head.state_dict().items()}
        head = ClassificationHead(*head.classifier.weight.shape[::-1])
        head.load_state_dict({k: v.cpu() for k, v in head_state.items()})
    if rank == 0:
        save(model)
        if head is not None:
            save_head(head)
    return model


if __name__ == "__main__":
    main()
