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


def _encode(text: str, tok) -> list[int]:
    encoded = tok.encode(text)
    return list(encoded.ids if hasattr(encoded, "ids") else encoded)


def _need_tokenizer(path: str):
    tok = _tokenizer()
    if tok is None:
        fail(
            f"there is no tokenizer in {HERE}, so {path} cannot be tokenized; give JSONL of token ids instead "
            '({"input_ids": [...]} per line).'
        )
    return tok


def tokenize_text(path: str) -> list[int]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        fail(f"{path} is not UTF-8 text (byte {err.start}); convert it to UTF-8 or give JSONL of token ids.")
    return _encode(text, _need_tokenizer(path))


def _ids(row: dict, vocab: int, path: str, tok: list) -> list[int]:
    """A row's token ids: its "input_ids" (integers in the vocabulary), or its "text" tokenized."""
    if "input_ids" not in row:
        if not isinstance(row.get("text"), str):
            raise ValueError('it has neither "input_ids" nor a "text" string')
        if not tok:
            tok.append(_need_tokenizer(path))
        ids = _encode(row["text"], tok[0])
        if not ids:
            raise ValueError("its text gives no tokens")
        return ids
    ids = row["input_ids"]
    if isinstance(ids, list) and any(isinstance(i, bool) for i in ids):
        raise ValueError("input_ids holds true/false; token ids are integers")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
        raise ValueError(f"input_ids must be a non-empty list of integers in [0, {vocab})")
    return ids


def read_jsonl(path: str, vocab: int) -> list[tuple[list[int], object]]:
    """Examples (token ids, label or None); a malformed line stops with its line number."""
    examples, tok = [], []
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
            ids = _ids(row, vocab, path, tok)
            label = row.get("label", row.get("labels"))
            if isinstance(label, bool) or isinstance(label, list) and any(isinstance(x, bool) for x in label):
                raise ValueError("its label is true/false; give the class number (0, 1, …)")
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            fail(
                f"{path} line {number} is malformed ({err}); each line must be like "
                '{"input_ids": [1, 2, 3]} or {"text": "..."} (optionally with "label": 0).'
            )
        examples.append((ids, label))
    if not examples:
        fail(f"{path} has no examples.")
    return examples


def load_examples(args, vocab: int, path: str | None = None) -> list[tuple[list[int], object]]:
    """Examples of at most seq-len tokens from `path` (default --data): a text file is cut into full sequences,
    JSONL rows are kept (long unlabeled rows cut into pieces) and padded in the batch."""
    if args.synthetic and path is None:
        gen = torch.Generator().manual_seed(args.seed)
        out = []  # a learnable task: short repeating patterns, so the loss visibly drops
        for i in range(16):
            period = 2 + i % 3
            base = torch.randint(0, vocab, (period,), generator=gen).tolist()
            ids = (base * (args.seq_len // period + 1))[: args.seq_len]
            out.append((ids, synthetic_label(ids[0] % args.num_labels, args.num_labels, args.problem_type)))
        return out
    path = path or args.data
    if not path:
        fail("give training data: --synthetic, --data file.txt or --data file.jsonl.")
    if os.path.isdir(path):
        fail(f"{path} is a folder; give a text file (.txt) or a JSONL file (.jsonl).")
    if not os.path.exists(path):
        fail(f"the data file {path} does not exist.")
    if path.endswith((".jsonl", ".json")):
        rows = read_jsonl(path, vocab)
        if all(label is not None for _, label in rows):
            return [(ids[: args.seq_len], label) for ids, label in rows]
        return [(ids[k : k + args.seq_len], None) for ids, _ in rows for k in range(0, len(ids), args.seq_len)]
    stream = tokenize_text(path)
    n = len(stream) // args.seq_len
    if n == 0:
        fail(f"{path} has {len(stream)} tokens, fewer than one sequence of --seq-len {args.seq_len}.")
    return [(stream[k * args.seq_len : (k + 1) * args.seq_len], None) for k in range(n)]


def split_eval(examples: list, args, vocab: int) -> tuple[list, list]:
    """(training examples, held-out examples): --eval-data, or the --eval-split fraction of the data (seeded)."""
    if args.eval_data:
        return examples, load_examples(args, vocab, args.eval_data)
    if not args.eval_split:
        return examples, []
    held = max(1, round(len(examples) * args.eval_split))
    if held >= len(examples):
        fail(
            f"--eval-split {args.eval_split} of {len(examples)} examples leaves none to train on; give more data or a "
            "smaller --eval-split."
        )
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(args.seed)).tolist()
    return [examples[i] for i in order[held:]], [examples[i] for i in order[:held]]


def check_labels(rows: list, source, classifier: bool, args) -> None:
    """Every row of a classifier's data has a label the head can take (a class below --num-labels)."""
    if not classifier or not rows:
        return
    for number, (_, label) in enumerate(rows, 1):
        if label is None:
            fail(f'{source} has rows without a label; this model trains a classifier, so give "label" on every line.')
        classes = [label] if isinstance(label, int) else label if isinstance(label, list) else []
        single = args.num_labels > 1 and args.problem_type in (None, "single_label_classification")
        if single and any(isinstance(c, int) and c != -100 and not 0 <= c < args.num_labels for c in classes):
            fail(
                f"{source} example {number} has label {label}, but the classifier has {args.num_labels} classes "
                f"(0 to {args.num_labels - 1}); fix the labels or pass --num-labels (models without a head)."
            )


def eval_batches(examples: list, size: int, kind: str | None, special: dict, seed: int):
    """The held-out examples in order, `size` at a time (masked-LM masking seeded: the same every evaluation)."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(examples), size):
        yield batch(examples, list(range(start, min(start + size, len(examples)))), kind, special, gen)


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


def mask_tokens(
    ids: torch.Tensor,
    attention: torch.Tensor,
    mask_id: int,
    never: set[int],
    vocab: int,
    gen: torch.Generator,
    rate: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
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
