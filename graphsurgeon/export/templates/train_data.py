"""Data for train.py: the folder's config and tokenizer, text / JSONL examples, padded batches, masked-LM masking.

Every problem with the data stops with one sentence and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------- the folder

def config() -> dict:
    path = os.path.join(HERE, "config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def max_positions() -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if isinstance(config().get(key), int):
            return config()[key]
    return 1 << 30


def vocab_size(model) -> int:
    if config().get("vocab_size"):
        return int(config()["vocab_size"])
    return max(p.shape[0] for n, p in model.named_parameters() if "embed" in n or "wte" in n)


def _tokenizer():
    """The tokenizer next to model.py (tokenizers or transformers), or None."""
    if os.path.exists(os.path.join(HERE, "tokenizer.json")):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(os.path.join(HERE, "tokenizer.json"))
    if os.path.exists(os.path.join(HERE, "tokenizer_config.json")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(HERE)
    return None


def _token_id(name: str) -> int | None:
    """The id of a special token (`name`: "mask", "pad", …) from config.json, else the tokenizer files."""
    if isinstance(config().get(f"{name}_token_id"), int):
        return config()[f"{name}_token_id"]
    token = None
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(HERE, file)
        if os.path.exists(path) and token is None:
            with open(path) as f:
                token = json.load(f).get(f"{name}_token")
    token = token.get("content") if isinstance(token, dict) else token
    tok = _tokenizer() if token else None
    if tok is None:
        return None
    return tok.token_to_id(token) if hasattr(tok, "token_to_id") else tok.convert_tokens_to_ids(token)


def special_ids() -> set[int]:
    """Ids masked-LM training never masks (pad, cls, sep, bos, eos)."""
    return {i for i in (_token_id(n) for n in ("pad", "cls", "sep", "bos", "eos")) if i is not None}


# ----------------------------------------------------------------------------- data

def tokenize_text(path: str) -> list[int]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        fail(f"{path} is not UTF-8 text (byte {err.start}); convert it to UTF-8 or give JSONL of token ids.")
    tok = _tokenizer()
    if tok is None:
        fail(f"there is no tokenizer in {HERE}, so {path} cannot be tokenized; give JSONL of token ids instead "
             '({"input_ids": [...]} per line).')
    encoded = tok.encode(text)
    return encoded.ids if hasattr(encoded, "ids") else list(encoded)


def read_jsonl(path: str, vocab: int) -> list[tuple[list[int], object]]:
    """Examples (token ids, label or None); a malformed line stops with its line number."""
    examples = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as err:
        fail(f"{path} is not UTF-8 text (byte {err.start}); write the JSONL as UTF-8.")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"it is a JSON {type(row).__name__}, not an object")
            if "input_ids" not in row:
                raise ValueError("it has no \"input_ids\"" + (" (text must be tokenized into input_ids first)"
                                                               if "text" in row else ""))
            ids = row["input_ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
                raise ValueError(f"input_ids must be a non-empty list of integers in [0, {vocab})")
            label = row.get("label", row.get("labels"))
        except (ValueError, KeyError, TypeError) as err:
            fail(f"{path} line {number} is malformed ({err}); each line must be like "
                 '{"input_ids": [1, 2, 3]} (optionally with "label": 0).')
        examples.append((ids, label))
    if not examples:
        fail(f"{path} has no examples.")
    return examples


def load_examples(args, vocab: int) -> list[tuple[list[int], object]]:
    """Examples of at most seq-len tokens: a text file is cut into full sequences, JSONL rows are kept (long
    unlabeled rows cut into pieces) and padded in the batch."""
    if args.synthetic:
        gen = torch.Generator().manual_seed(args.seed)
        out = []  # a learnable task: short repeating patterns, so the loss visibly drops
        for i in range(16):
            period = 2 + i % 3
            base = torch.randint(0, vocab, (period,), generator=gen).tolist()
            ids = (base * (args.seq_len // period + 1))[: args.seq_len]
            out.append((ids, synthetic_label(ids[0] % args.num_labels, args.num_labels, args.problem_type)))
        return out
    if not args.data:
        fail("give training data: --synthetic, --data file.txt or --data file.jsonl.")
    if os.path.isdir(args.data):
        fail(f"{args.data} is a folder; give a text file (.txt) or a JSONL file (.jsonl).")
    if not os.path.exists(args.data):
        fail(f"the data file {args.data} does not exist.")
    if args.data.endswith((".jsonl", ".json")):
        rows = read_jsonl(args.data, vocab)
        if all(label is not None for _, label in rows):
            return [(ids[: args.seq_len], label) for ids, label in rows]
        return [(ids[k:k + args.seq_len], None) for ids, _ in rows for k in range(0, len(ids), args.seq_len)]
    stream = tokenize_text(args.data)
    n = len(stream) // args.seq_len
    if n == 0:
        fail(f"{args.data} has {len(stream)} tokens, fewer than one sequence of --seq-len {args.seq_len}.")
    return [(stream[k * args.seq_len:(k + 1) * args.seq_len], None) for k in range(n)]


def synthetic_label(k: int, num_labels: int, problem_type: str | None):
    """Class k as the model's loss expects it: an int, a float (regression) or a multi-hot list (multi-label)."""
    if num_labels == 1 or problem_type == "regression":
        return float(k)
    if problem_type == "multi_label_classification":
        return [1.0 if j == k else 0.0 for j in range(num_labels)]
    return k


def collate(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask): rows padded on the right to the longest, the mask 0 on the padding."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, mask_id: int, never: set[int], vocab: int,
                gen: torch.Generator, rate: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-LM inputs and labels as Hugging Face's collator makes them: `rate` of the real tokens (never padding
    or special tokens) are predicted; of those 80% become mask_id, 10% a random token, 10% stay."""
    allowed = attention.bool() & ~torch.isin(ids, torch.tensor(sorted(never), dtype=ids.dtype))
    picked = (torch.rand(ids.shape, generator=gen) < rate) & allowed
    empty = ~picked.any(1) & allowed.any(1)  # at least one prediction per row that has a real token
    first = allowed.float().argmax(1)
    picked[empty, first[empty]] = True
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=gen)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    noise = picked & (roll >= 0.8) & (roll < 0.9)
    inputs = torch.where(noise, torch.randint(0, vocab, ids.shape, generator=gen), inputs)
    return inputs, labels


def batch(examples, pick: list[int], kind: str | None, special: dict, gen: torch.Generator):
    """(input_ids, attention_mask, labels) of the examples `pick` for the loss `kind` (model.py's LOSS)."""
    ids, attention = collate([examples[i][0] for i in pick], special["pad"])
    if kind == "ForCausalLM":  # the model shifts them; padding is never a target
        return ids, attention, ids.masked_fill(attention == 0, -100)
    if kind == "ForMaskedLM":
        inputs, labels = mask_tokens(ids, attention, special["mask"], special["never"], special["vocab"], gen)
        return inputs, attention, labels
    labels = [examples[i][1] for i in pick]
    if kind == "ForTokenClassification":
        return ids, attention, torch.tensor([(l + [-100] * ids.shape[1])[: ids.shape[1]] for l in labels])
    is_float = any(isinstance(l, (float, list)) for l in labels)
    return ids, attention, torch.tensor(labels, dtype=torch.float32 if is_float else torch.long)
