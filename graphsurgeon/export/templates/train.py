"""Train the LoRA weights of the exported model (written by graphsurgeon; runs without it).

    python train.py --synthetic --steps 50                      # -> runs/<name>/ (the export is never written to)
    python train.py --data my.txt                                # tokenized with the tokenizer in this folder
    python train.py --data my.jsonl --eval-split 0.05            # {"input_ids": [...]} or {"text": "..."} per line
    python train.py --resume runs/<name> --steps 200             # continue a run (same data order, bit for bit)
    python train.py --merge-only runs/<name>                     # fold its LoRA into the weights -> runs/<name>/merged/
    python train.py --synthetic --device cuda --bf16 --compile --grad-checkpoint
    torchrun --nproc_per_node 2 train.py --synthetic --steps 50          # data-parallel (DDP)
    torchrun --nproc_per_node 2 train.py --synthetic --steps 50 --fsdp   # sharded (FSDP2, one unit per block)

The recipe: AdamW, linear warm-up then cosine (or linear) decay, gradient clipping, accumulation. Rows shorter than
--seq-len are padded on the right; the attention mask and the labels (-100) leave the padding out. The loss is the one
the exported model computes from `labels` as Hugging Face does (next-token, masked-LM, classification); a model
without a head gets the small ClassificationHead below. A non-finite loss or gradient stops the run before anything
is saved. Needs torch and safetensors; tokenizers or transformers only to tokenize text, transformers for merged/.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # never a __pycache__ in the export folder

import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

if importlib.util.find_spec("safetensors") is None:  # weights are safetensors, never pickle
    raise ImportError("train.py needs the safetensors package: pip install safetensors")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lora_math  # noqa: E402  (the LoRA column maths, next to this file)
import model as exported  # noqa: E402  (model.py next to this file)
import train_save as runs  # noqa: E402  (the run folder)
from train_args import DEFAULT_LR, parse_args  # noqa: E402  (the command line)
from train_data import (  # noqa: E402
    _token_id,
    batch,
    check_labels,
    eval_batches,
    fail,
    load_examples,
    special_ids,
    split_eval,
    vocab_size,
)


def lr_at(step: int, args) -> float:
    """The learning rate of optimizer step `step` (1-based): linear warm-up, then cosine / linear decay to 0."""
    warm = int(args.warmup if args.warmup >= 1 else round(args.warmup * args.steps))
    if step <= warm:
        return args.lr * step / warm
    if args.schedule == "constant":
        return args.lr
    done = (step - warm) / max(1, args.steps - warm)
    return args.lr * (0.5 * (1 + math.cos(math.pi * done)) if args.schedule == "cosine" else 1 - done)


def step_seed(args, step: int, micro: int, rank: int) -> int:
    """The seed of one batch: data order, masking and dropout depend on (seed, step, batch, rank) only, so a resumed
    run draws what the uninterrupted run would have drawn."""
    return (((args.seed * 1_000_003 + step) * 1009 + micro) * 8191 + rank) % (1 << 62)


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
    """The model (and the head, when it has none of its own) -> the training loss of one batch (and its logits)."""

    def __init__(self, model: torch.nn.Module, head: ClassificationHead | None) -> None:
        super().__init__()
        self.model, self.head = model, head
        self.takes_mask = "attention_mask" in inspect.signature(model.forward).parameters

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor, logits: bool = False):
        inputs = {"input_ids": ids, **({"attention_mask": attention} if self.takes_mask else {})}
        if self.head is None:
            out = self.model(**inputs, labels=labels)
            return (out["loss"], out.get("logits")) if logits else out["loss"]
        out = self.model(**inputs)
        scores = self.head(next(v for v in out.values() if v.dim() == 3), attention).float()
        loss = F.cross_entropy(scores, labels)
        return (loss, scores) if logits else loss


def evaluate(task: Task, examples, kind, special, args, device) -> dict:
    """Mean loss over the held-out examples (perplexity for language models, accuracy for classifiers)."""
    was = task.training
    task.eval()
    total, count, right, judged = 0.0, 0, 0, 0
    with torch.no_grad():
        for ids, attention, labels in eval_batches(examples, args.batch_size, kind, special, args.seed):
            loss, logits = task(ids.to(device), attention.to(device), labels.to(device), logits=True)
            total, count = total + loss.item() * len(ids), count + len(ids)
            if logits is not None and labels.dtype == torch.long and kind not in ("ForCausalLM", "ForMaskedLM"):
                keep = labels.to(device) != -100
                right += int((logits.argmax(-1) == labels.to(device))[keep].sum())
                judged += int(keep.sum())
    task.train(was)
    out = {"eval_loss": total / max(1, count)}
    if kind in ("ForCausalLM", "ForMaskedLM"):
        out["eval_perplexity"] = math.exp(min(out["eval_loss"], 50))
    if judged:
        out["eval_accuracy"] = right / judged
    return out


# ----------------------------------------------------------------------------- scaling


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks: children of a ModuleList that have a forward of their own."""
    return [
        m
        for lst in model.modules()
        if isinstance(lst, torch.nn.ModuleList)
        for m in lst
        if type(m).forward is not torch.nn.Module.forward
    ]


def checkpoint_blocks(model: torch.nn.Module) -> int:
    """Recompute each block's activations in backward instead of keeping them (--grad-checkpoint)."""
    from torch.utils.checkpoint import checkpoint

    found = blocks(model)
    for block in found:
        block.forward = (lambda fwd: lambda *a, **k: checkpoint(fwd, *a, use_reentrant=False, **k))(block.forward)
    return len(found)


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
        task = torch.nn.parallel.DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(task) if args.compile else task


def mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.item() / world


# ----------------------------------------------------------------------------- training


def pick_device(args) -> torch.device:
    want = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked but this torch has no CUDA device; use --device cpu.")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if want == "cuda" else "cpu")


def run_name(args, world: int) -> str:
    """The run folder: --resume's, runs/<--run-name>, or a new runs/run-<date>-<time> (rank 0's name under torchrun)."""
    if args.resume:
        return os.path.abspath(args.resume)
    name = [args.run_name or time.strftime("run-%Y%m%d-%H%M%S")]
    if world > 1:
        torch.distributed.broadcast_object_list(name, src=0)
    return os.path.join(args.runs_dir, name[0])


def nonfinite_weights(model: torch.nn.Module) -> list[str]:
    """The weights that hold NaN or inf (read once before training: the likely cause when the loss goes non-finite)."""
    return [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]


def nonfinite(source: list[str], what: str, step: int, args, folder: str) -> None:
    """Stop: name the step and the likely cause (source weights that were never finite, else the learning rate)."""
    saved = f"{folder} keeps its last save" if os.path.isdir(folder) else "nothing was saved"
    if source:
        fail(
            f"the {what} is not finite at step {step}: the source weights hold non-finite values ({source[0]}"
            f"{f' and {len(source) - 1} more' if len(source) > 1 else ''}); fix model.safetensors; {saved}."
        )
    fail(
        f"the {what} is not finite at step {step} (lr {lr_at(step, args):.3g} of --lr {args.lr:g}): the learning rate is likely too high, "
        f"lower --lr (LoRA trains well at {DEFAULT_LR['lora']}); {saved}."
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if args.fsdp and world == 1:
        fail("--fsdp shards the model across processes: run it under torchrun (--nproc_per_node 2 or more).")
    if args.fsdp and args.resume:
        fail("--resume does not gather FSDP's sharded optimizer state; resume without --fsdp (DDP or one process).")
    device = pick_device(args)
    try:
        model = exported.load_model(HERE, device=str(device))
    except getattr(exported, "WeightsError", ValueError) as err:
        fail(str(err))
    kind = loss_type()
    heads = lora_math.trained_heads(model, kind)
    if args.merge_only is not None:
        folder = (
            os.path.abspath(args.merge_only)
            if args.merge_only
            else os.path.join(args.runs_dir, args.run_name or "export")
        )
        steps = 0
        if args.merge_only:
            saved = runs.read_run(folder, for_resume=False)
            runs.load_trainable(
                model, None, {k: v for k, v in saved["trainable"].items() if not k.startswith("head.")}
            )
            steps = saved["state"].get("step", 0)
        runs.check_writable(folder)
        print(
            f"merged model written to {runs.merge(model, folder, {'steps': steps, 'run': os.path.basename(folder)})}"
        )
        return
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    folder = run_name(args, world)
    if not args.resume and os.path.exists(folder):
        fail(f"{folder} exists; continue it with --resume {folder} or choose another --run-name.")
    runs.check_writable(folder)
    torch.manual_seed(args.seed)
    args.problem_type = (getattr(exported, "LOSS", None) or {}).get("problem_type")
    if kind and "Classification" in kind:  # the model's own head decides the number of labels
        args.num_labels = exported.LOSS["num_labels"]
    for name, p in model.named_parameters():  # LoRA, and a classifier head of the model's own (its task is new)
        p.requires_grad_(".lora_A." in name or ".lora_B." in name or name.split(".")[0] in heads)
    vocab = vocab_size(model)
    special = {"pad": _token_id("pad") or 0, "never": special_ids(), "vocab": vocab, "mask": args.mask_token_id}
    if kind == "ForMaskedLM":
        special["mask"] = special["mask"] if special["mask"] is not None else _token_id("mask")
        if special["mask"] is None:
            fail(
                "masked-LM training needs the [MASK] token id: put the tokenizer files next to model.py or pass --mask-token-id."
            )
        if special["mask"] in special["never"] or not 0 <= special["mask"] < vocab:
            fail(
                f"--mask-token-id {special['mask']} is padding, a special token or outside the vocabulary; give the [MASK] id."
            )
    examples = load_examples(args, vocab)
    examples, held = split_eval(examples, args, vocab)
    classifier = kind is None or "Classification" in kind
    for source, rows in ((args.data or "the data", examples), (args.eval_data or args.data or "the data", held)):
        check_labels(rows, source, classifier, args)
    head = None
    if kind is None:
        with torch.no_grad():
            out = model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device))
        head = ClassificationHead(next(v for v in out.values() if v.dim() == 3).shape[-1], args.num_labels).to(device)
    if args.resume:
        runs.load_trainable(model, head, args.saved["trainable"])
    task = Task(model, head).to(device)
    broken = nonfinite_weights(model)
    named = {n: p for n, p in task.named_parameters() if p.requires_grad}
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    n_train = sum(p.numel() for p in named.values())
    if rank == 0:
        print(f"trainable params: {n_train:,} || all params: {total:,} || trainable%: {100 * n_train / total:.4f}")
    if not named:
        fail("there are no LoRA weights to train in this model.")
    names = {id(p): n[len("model.") :] if n.startswith("model.") else n for n, p in named.items()}
    if args.grad_checkpoint:
        found = checkpoint_blocks(model)
        if rank == 0:
            print(f"gradient checkpointing: {found} blocks")
    net = wrap(task, args, device, world)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    if args.fsdp:  # FSDP2 replaced the parameters with sharded ones, in the same order
        names = {id(q): names[id(p)] for p, q in zip(named.values(), params)}
    first, metrics = 1, []
    if args.resume:
        runs.load_optimizer(opt, {names[id(p)]: p for p in params}, args.saved["optimizer"])
        first, metrics = args.saved["state"]["step"] + 1, args.saved["metrics"]
        if rank == 0:
            print(f"resumed {folder} at step {first - 1}")
    shard = torch.arange(rank, len(examples), world)  # DistributedSampler-style: rank r takes r, r+world, …
    task.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def save(step: int) -> torch.nn.Module:
        trained = runs.trainable_tensors({names[id(p)]: p for p in params})
        moments = runs.optimizer_tensors(opt, names)
        plain = runs.plain_copy(model, trained) if world > 1 and args.fsdp else model
        if rank != 0:
            return plain
        adapter, config = runs.peft_adapter(plain, heads)
        files = {
            "trainable.safetensors": trained,
            "optimizer.safetensors": moments,
            "metrics.jsonl": metrics,
            "args.json": {k: v for k, v in vars(args).items() if k != "saved"},
            "trainer_state.json": {
                "step": step,
                "export": runs.export_fingerprint(),
                "lr": lr_at(max(step, 1), args),
                "schedule": args.schedule,
                "warmup": args.warmup,
                "steps": args.steps,
                "world_size": world,
                "argv": sys.argv[1:] if argv is None else list(argv),
            },
        }
        if adapter:
            files.update({"adapter_model.safetensors": adapter, "adapter_config.json": config})
        if head is not None:
            files["classifier_head.safetensors"] = {
                k[len("head.") :]: v for k, v in trained.items() if k.startswith("head.")
            }
        runs.write_run(folder, files)
        return plain

    timed, tokens, history, step = None, 0, [], first - 1
    for step in range(first, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        step_tokens, step_loss = 0, 0.0
        for micro in range(args.grad_accum):
            seed = step_seed(args, step, micro, rank)
            torch.manual_seed(seed)  # dropout
            gen = torch.Generator().manual_seed(seed)
            pick = shard[torch.randint(0, len(shard), (args.batch_size,), generator=gen)].tolist()
            ids, attention, labels = batch(examples, pick, kind, special, gen)
            with autocast:
                loss = net(ids.to(device), attention.to(device), labels.to(device))
            (loss / args.grad_accum).backward()
            step_loss += loss.item() / args.grad_accum
            step_tokens += int(attention.sum())
        step_loss = mean_over_ranks(step_loss, world, device)
        if not math.isfinite(step_loss):
            nonfinite(broken, "loss", step, args, folder)
        norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm or float("inf"))
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if not math.isfinite(norm):
            nonfinite(broken, "gradient", step, args, folder)
        opt.step()
        opt.zero_grad(set_to_none=True)
        history.append(step_loss)
        if timed is None:  # the first step compiles and warms up: tokens/s counts from the second
            timed = time.perf_counter()
        else:
            tokens += mean_over_ranks(step_tokens, world, device) * world
        row = {"step": step, "loss": step_loss, "lr": lr_at(step, args), "grad_norm": norm}
        if (held and args.eval_every and step % args.eval_every == 0) or (held and step == args.steps):
            row.update(evaluate(task, held, kind, special, args, device))
        metrics.append(row)
        if rank == 0 and (step % max(1, args.steps // 20) == 0 or step == args.steps or "eval_loss" in row):
            spent = time.perf_counter() - timed
            rate = f"{tokens / spent:,.0f}" if spent > 0 and tokens else "-"  # from the second step on
            eta = spent / max(1, step - first) * (args.steps - step)
            evals = "".join(f" {k} {v:.4f}" for k, v in row.items() if k.startswith("eval_"))
            done = int(20 * step / args.steps)
            print(
                f"[{'#' * done:<20}] step {step}/{args.steps} loss {step_loss:.4f} lr {row['lr']:.2e} "
                f"tokens/s {rate} eta {eta:.0f}s{evals}",
                flush=True,
            )
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            save(step)
    if history and rank == 0:
        k = max(1, min(5, len(history) // 2))
        print(
            f"mean loss of the first {k} steps {sum(history[:k]) / k:.4f} -> last {k} steps {sum(history[-k:]) / k:.4f}"
        )
    plain = save(max(step, first - 1))
    if rank == 0:
        print(f"saved: {folder}")
        if args.merge:
            merged = runs.merge(plain, folder, {"steps": step, "run": os.path.basename(folder), "lr": args.lr})
            print(f"merged model written to {merged}")
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
