"""What capture records so an exported model keeps Hugging Face's conventions (read by every code generator).

The graph is captured once, in eval mode, with the token inputs the model's forward takes. Three facts the eval
graph does not hold by itself are recorded next to it (node meta keys and readers: graph/hf_meta.py):

* `node.meta["train_dropout_p"]` on every dropout node and attention (SDPA) node: the probability Hugging Face
  uses there in training. The eval capture fixes SDPA's `dropout_p` at 0.0 (HF passes `0.0 if not self.training`)
  and eager attention's dropout likewise, so the model is run once more in train mode on fake tensors (no
  compute, works for meta captures) under a TorchFunctionMode that sees every `F.dropout` and
  `F.scaled_dot_product_attention` call with its p; the calls are matched to the graph's dropout and attention
  nodes in order. A generator writes `F.dropout(x, p, self.training)` and `dropout_p=p if self.training else 0.0`.
* `node.meta["hf_default_of"] = "position_ids"` on the value HF computes when `position_ids` is not given
  (the last value its code assigns to a variable of that name: `arange`, OPT's mask cumsum, RoBERTa's
  padding-aware positions). position_ids is not captured as an input because this default differs per model
  and is exactly what the graph already computes; a generator writes
  `position_ids if position_ids is not None else <that value>`.
* `CapturedModel.hf_loss`: which loss HF computes from `labels` (`ForCausalLM`, `ForMaskedLM`,
  `ForSequenceClassification`, `ForTokenClassification`, `ForConditionalGeneration` for encoder-decoder LMs) with
  `num_labels` and `problem_type`, or None.
* `CapturedModel.decoder_default`: how an encoder-decoder derives `decoder_input_ids` when they are not given (a
  right shift of `labels`, or of `input_ids` for BART-like models), found by running the model.
"""

from __future__ import annotations

import inspect
import re

import torch
import torch.fx
from torch.overrides import TorchFunctionMode

from graphsurgeon.graph.hf_meta import DEFAULT_OF, PACKS_SEQUENCES, TRAIN_P, dropout_kind, dropout_nodes
from graphsurgeon.graph.quiet import quiet_fake_kernels

SEQ2SEQ = "ForConditionalGeneration"  # an encoder-decoder LM's loss (a multimodal decoder's is ForCausalLM here)
LOSSES = ("ForCausalLM", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", SEQ2SEQ)


# ----------------------------------------------------------------------------- dropout in training

class _DropoutCalls(TorchFunctionMode):
    """Records (kind, p) for each dropout / attention call, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, float]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = dropout_kind(getattr(func, "__name__", ""))
        if kind == "attention":
            p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
            self.calls.append((kind, float(p)))
        elif kind == "dropout":
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            self.calls.append((kind, float(p) if training else 0.0))
        return func(*args, **kwargs)


def train_dropout_calls(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
    """The model's dropout / attention calls in train mode, run on fake tensors (nothing is computed or changed).
    When a fake kernel cannot run (Mixtral's `_grouped_mm` has a bf16-only meta kernel) and the weights are real,
    the probe runs once on the real tensors instead, with the random state restored afterwards."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    modes = {m: m.training for m in model.modules()}
    try:
        model.train()
        try:
            with quiet_fake_kernels(), FakeTensorMode(allow_non_fake_inputs=True) as fake, torch.no_grad():
                fake_inputs = {k: fake.from_tensor(v) for k, v in inputs.items()}
                with _DropoutCalls() as rec:
                    model(**fake_inputs)
        except Exception:
            if any(t.is_meta for t in [*model.parameters(), *inputs.values()]):
                raise
            with torch.random.fork_rng(devices=[]), torch.no_grad(), _DropoutCalls() as rec:
                model(**inputs)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return rec.calls


def record_train_dropout(model: torch.nn.Module, gm: torch.fx.GraphModule, inputs: dict[str, torch.Tensor]) -> str | None:
    """Set meta["train_dropout_p"] on the graph's dropout and attention nodes; a note when it cannot."""
    try:
        calls = train_dropout_calls(model, inputs)
    except Exception as err:  # noqa: BLE001 - the capture stands; only training-mode dropout is unknown
        return f"train-mode dropout was not recorded ({type(err).__name__}: {str(err)[:120]}); model.py uses the eval graph's p."
    nodes = dropout_nodes(gm)
    notes = []
    for kind in ("dropout", "attention"):
        ps = [p for k, p in calls if k == kind]
        ns = [n for k, n in nodes if k == kind]
        if len(ps) != len(ns):
            notes.append(f"{len(ps)} {kind} calls in training but {len(ns)} in the graph")
            continue
        for node, p in zip(ns, ps):
            node.meta[TRAIN_P] = p
    return ("train-mode dropout not recorded: " + "; ".join(notes) + ".") if notes else None


# ----------------------------------------------------------------------------- position_ids default

_ASSIGNS = re.compile(r"^\s*position_ids\s*(?::[^=]*)?=[^=]")


def _source_line(node: torch.fx.Node) -> str:
    """The model-code line that produced `node` (innermost frame of its stack trace)."""
    lines = [ln for ln in (node.meta.get("stack_trace") or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines and not lines[-1].lstrip().startswith("File ") else ""


def mark_position_ids_default(gm: torch.fx.GraphModule, seq_of_ids) -> torch.fx.Node | None:
    """Tag the value HF uses as position_ids when none is given: the last value its code assigns to
    `position_ids`, an integer [1 or batch, seq] tensor read by code that does not assign position_ids."""
    assigned = [n for n in gm.graph.nodes if n.op == "call_function" and _ASSIGNS.match(_source_line(n))]
    finals = []
    for node in assigned:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dtype.is_floating_point or val.dim() != 2:
            continue
        if str(val.shape[1]) != str(seq_of_ids):
            continue
        if any(u not in assigned and u.op != "output" for u in node.users):
            finals.append(node)
    if len(finals) != 1:
        return None
    finals[0].meta[DEFAULT_OF] = "position_ids"
    return finals[0]


# ----------------------------------------------------------------------------- packed sequences

PACKED_PROBE = [[0, 1, 2, 0, 1, 2]]  # two sequences of three tokens packed in one row


def packs_sequences(model: torch.nn.Module, inputs: dict) -> bool:
    """Whether HF, given position_ids that restart and no attention_mask, attends only within each run of
    consecutive positions (transformers ≥ 5.25 reads them as packed sequences when it keeps no KV cache).

    Decided by running the model as its user would (its own config, before capture turns the cache off) twice on
    one packed row, without and with an all-ones mask; a model on the meta device cannot run and says no.
    """
    ids = inputs.get("input_ids")
    if ids is None or ids.is_meta or "attention_mask" not in inputs \
            or "position_ids" not in inspect.signature(model.forward).parameters:
        return False
    width = len(PACKED_PROBE[0])
    probe_ids = torch.arange(width, device=ids.device)[None] % int(ids.max()) + 1  # distinct tokens
    positions = torch.tensor(PACKED_PROBE, device=ids.device)
    training = model.training
    try:
        with torch.no_grad():
            model.eval()  # dropout would make the two runs differ anyway
            bare = _first_tensor(model(input_ids=probe_ids, position_ids=positions))
            masked = _first_tensor(model(input_ids=probe_ids, position_ids=positions,
                                         attention_mask=torch.ones_like(probe_ids)))
    except Exception:  # noqa: BLE001 - a model that cannot run this probe keeps HF's plain default
        return False
    finally:
        model.train(training)
    return bare is not None and masked is not None and not torch.allclose(bare, masked, atol=1e-6, rtol=0)


def mark_packed_sequences(gm: torch.fx.GraphModule) -> None:
    """Tag the graph's `attention_mask` input: HF reads restarting position_ids as packed sequences."""
    mask = next((n for n in gm.graph.nodes if n.op == "placeholder" and n.name == "attention_mask"), None)
    if mask is not None:
        mask.meta[PACKS_SEQUENCES] = True


def _first_tensor(out) -> torch.Tensor | None:
    values = out.values() if hasattr(out, "values") else out
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


# ----------------------------------------------------------------------------- loss

def hf_loss_spec(model: torch.nn.Module, takes_labels: bool, output_names: list[str]) -> dict | None:
    """{"loss_type", "num_labels", "problem_type"} of the loss HF computes from labels, or None.

    HF picks the loss by the class name (PreTrainedModel.loss_type) and falls back to the causal-LM loss
    (GPT2LMHeadModel); only models whose forward takes labels and returns `logits` get one here. That fallback is
    trusted only where the forward calls `self.loss_function`: a class named for no loss that computes its own
    (XLNetLMHeadModel: cross-entropy without the causal shift) gets none, rather than a loss HF does not compute.
    """
    if not takes_labels or "logits" not in output_names:
        return None
    cfg = getattr(model, "config", None)
    loss_type = getattr(model, "loss_type", None) or "ForCausalLM"
    named = any(type(model).__name__.endswith(kind) for kind in LOSSES)
    seq2seq = getattr(cfg, "is_encoder_decoder", False)  # its own loss is the unshifted one too (MarianMTModel)
    if not (named or seq2seq) and "loss_function" not in _forward_source(model):
        return None
    if seq2seq and loss_type in ("ForCausalLM", "ForConditionalGeneration"):
        loss_type = SEQ2SEQ  # T5, BART, Marian: cross-entropy over every label, no shift (the decoder input is shifted)
    if loss_type not in LOSSES:
        return None
    return {"loss_type": loss_type, "num_labels": int(getattr(cfg, "num_labels", 2) or 2),
            "problem_type": getattr(cfg, "problem_type", None)}


def _forward_source(model: torch.nn.Module) -> str:
    try:
        return inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return ""


# ----------------------------------------------------------------------------- decoder_input_ids default

def decoder_input_default(model: torch.nn.Module, inputs: dict) -> dict | None:
    """How HF derives an encoder-decoder's `decoder_input_ids` when they are not given: {"sources": inputs it
    shifts right, in HF's order of preference ("labels", then "input_ids" for BART-like models), "start":
    decoder_start_token_id, "pad": pad_token_id}, or None (none given: decoder_input_ids stay required).

    Decided by running the model as a user would, without decoder_input_ids, with a hook on its decoder: a
    source counts when the decoder received exactly `shift_right(source, start, pad)` (-100 read as pad). A model
    on the meta device cannot run and keeps decoder_input_ids required.
    """
    cfg = getattr(model, "config", None)
    ids = inputs.get("input_ids")
    if not getattr(cfg, "is_encoder_decoder", False) or "decoder_input_ids" not in inputs or ids is None \
            or ids.is_meta or not hasattr(model, "get_decoder"):
        return None
    start, pad = getattr(cfg, "decoder_start_token_id", None), getattr(cfg, "pad_token_id", None)
    if not isinstance(start, int) or not isinstance(pad, int):
        return None
    vocab = int(getattr(cfg, "vocab_size", 0) or int(ids.max()) + 1)
    probe = (torch.arange(6, device=ids.device)[None] * 7 + 3) % vocab
    labels = (probe + 1) % vocab
    labels[0, 2] = -100  # ignored by the loss, and read as pad by HF's shift
    seen: list = []

    def record(_module, args, kwargs):
        seen.append(kwargs.get("input_ids", args[0] if args else None))

    sources = []
    hook = model.get_decoder().register_forward_pre_hook(record, with_kwargs=True)
    training = model.training
    try:
        model.eval()
        for source, given in (("labels", {"labels": labels}), ("input_ids", {})):
            seen.clear()
            try:
                with torch.no_grad():
                    model(input_ids=probe, **given)
            except Exception:  # noqa: BLE001 - HF itself derives nothing from this source
                continue
            want = shift_right(labels if source == "labels" else probe, start, pad)
            if seen and isinstance(seen[0], torch.Tensor) and torch.equal(seen[0], want):
                sources.append(source)
    finally:
        hook.remove()
        model.train(training)
    return {"sources": sources, "start": start, "pad": pad} if sources else None


def shift_right(ids: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """HF's shift of labels / input_ids into decoder inputs: `start` first, the last token dropped, -100 -> pad."""
    out = torch.cat([torch.full_like(ids[..., :1], start), ids[..., :-1]], -1)
    return out.masked_fill(out == -100, pad)
