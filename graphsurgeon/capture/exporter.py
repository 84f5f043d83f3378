"""torch.export (non-strict) of a model into a CapturedModel with named dynamic dims."""

from __future__ import annotations

import inspect
import os

import torch
from torch.export import Dim

from graphsurgeon.capture.failures import explain_failure
from graphsurgeon.capture.grad_regions import inline_grad_regions
from graphsurgeon.capture.hf_conventions import (decoder_input_default, hf_loss_spec, mark_packed_sequences,
                                                 mark_position_ids_default, packs_sequences, record_train_dropout)
from graphsurgeon.capture.ranges import Ranges, divisor_guard, specialized, unproven_guard
from graphsurgeon.errors import CaptureError
from graphsurgeon.graph.captured import CapturedModel
from graphsurgeon.graph.meta import DimNames
from graphsurgeon.graph.peft_classes import not_for_peft
from graphsurgeon.graph.tidy import tidy

EXAMPLE_BATCH, EXAMPLE_SEQ = 2, 10  # the walkthrough's example sizes

# FAKE_TENSOR_CACHE: torch.export's fake-tensor dispatch cache is switched off for our exports. With dynamic
# (batch, seq) dims every cache hit rebuilds its output's symbolic sizes and strides through sympy, which costs more
# than running the op's meta function again: the 2-layer Llama-3-70B twin exports in 0.62x the CPU time without it
# (benchmarks/capture.py --fake-cache), and the graph is the same node for node (tests/test_replicate.py).


# Hugging Face's value for an optional token input that is not given: filled like input_ids
OPTIONAL_TOKEN_INPUTS = {"attention_mask": "ones", "token_type_ids": "zeros"}


def token_input_names(model: torch.nn.Module) -> list[str]:
    """The token inputs a Hugging Face model is captured with: input_ids, and attention_mask / token_type_ids
    when its forward takes them (token_type_ids only when the model has a token-type embedding, whose default
    input is all zeros: BERT-family; GPT-2 takes token_type_ids too but adds nothing when they are absent)."""
    names = ["input_ids"]
    if forward_accepts(model, "attention_mask", named=True):  # FNet takes **kwargs but no mask
        names.append("attention_mask")
    cfg = getattr(model, "config", None)
    if forward_accepts(model, "token_type_ids", named=True) and int(getattr(cfg, "type_vocab_size", 0) or 0) > 0:
        names.append("token_type_ids")
    return names


def example_token_inputs(model: torch.nn.Module, device: str, names: list[str]) -> dict[str, torch.Tensor]:
    """Inputs of shape (2, 10) for a Hugging Face model: random ids, the optional inputs at their defaults.

    Values only need the right dtype: the graph is traced (HF skips its data-dependent mask shortcuts under
    export), so a padded mask at run time goes through the same ops.
    """
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 100) or 100)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (EXAMPLE_BATCH, EXAMPLE_SEQ), generator=gen).to(device)
    return {"input_ids": ids, **{n: default_input(OPTIONAL_TOKEN_INPUTS[n], ids) for n in names[1:]}}


def default_input(fill: str, like: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(like) if fill == "ones" else torch.zeros_like(like)


POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length",
                 "max_sequence_length", "context_length")


def max_positions(model: torch.nn.Module) -> int:
    """The longest sequence the config allows (its position table), 4096 when it names none."""
    cfg = getattr(model, "config", None)
    for key in POSITION_KEYS:
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 2:
            return v
    return 4096


def default_dynamic(inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    """Token tensors (2-D) get dims (batch, seq); any other tensor gets batch on dim 0."""
    return {k: ({0: "batch", 1: "seq"} if v.dim() == 2 else {0: "batch"}) for k, v in inputs.items() if v.dim() >= 1}


def export_module(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    dynamic: dict[str, dict[int, str]] | None = None,
    extra_kwargs: dict | None = None,
    max_seq: int | None = None,
    name: str = "<module>",
) -> tuple[torch.fx.GraphModule, DimNames, list[str]]:
    """Export `model(**inputs, **extra_kwargs)`; returns the unlifted GraphModule, dim names, output names.
    A dim the model's code cuts into windows of m is captured as a multiple of m: `inputs` is updated in place to
    example sizes that are multiples of m.

    Sequence dims are bounded by `max_seq`. When torch.export finds the model cannot take that many
    positions (GPT-Neo slices a causal buffer with `[:key_length]`, so seq must stay below its length),
    the next bound is tried: the one torch.export suggests, max_seq - 1, then no maximum. A dim the
    model's code fixes to its example size (RWKV loops over positions in Python) is made static.
    `dims.bounds` records the bound used for each dynamic dim; `dims.static` the dims made static.
    """
    dynamic = default_dynamic(inputs) if dynamic is None else {k: dict(v) for k, v in dynamic.items()}
    _no_cache(model)
    ranges = Ranges(dynamic, max_seq)
    static: dict[str, int] = {}
    fallback: list[int | None] = [max_seq - 1, None] if max_seq else []
    deferred = ""  # a guard torch.export cannot prove for any range: checked when the graph runs instead
    multiples: dict[str, tuple[int, str]] = {}  # dim -> (m, the guard): captured as m × another dim
    for _ in range(12):
        try:
            ep = _export(model, inputs, dynamic, extra_kwargs, ranges.now, bool(deferred), multiples)
            break
        except Exception as err:  # noqa: BLE001 - translated to one sentence
            text = str(err)
            if "Constraints violated" not in text:
                raise CaptureError(explain_failure(err, name, _attn(model))) from err
            fixed = specialized(text, dynamic)
            if fixed:  # the code fixes these dims: capture them at their example size
                static.update(fixed)
                continue
            window = divisor_guard(text, set(ranges.now) - set(multiples))
            if window:  # the code cuts the dim into windows of m: a multiple of m, an example size that is one
                multiples[window[0]] = window[1:]
                ranges.scale[window[0]] = window[1]
                _round_up(inputs, dynamic, window[0], window[1])
                ranges.reset()
                fallback = [max_seq - 1, None] if max_seq else []
                continue
            if ranges.suggest(text) or _next_bound(ranges, fallback):
                continue
            if not deferred:  # a guard it cannot prove for any range (Aria: seq*min(64, 64*seq) == 64*seq)
                deferred = unproven_guard(text, ranges.now)
                ranges.reset()  # the ranges are tried again, with that guard left to run time
                fallback = [max_seq - 1, None] if max_seq else []
                continue
            raise CaptureError(explain_failure(err, name, _attn(model))) from err
    else:  # pragma: no cover - twelve attempts without a capture
        raise CaptureError(f"torch.export could not capture {name} with dynamic batch and sequence sizes.")
    gm = ep.module()
    inline_grad_regions(gm)
    tidy(gm)
    dims = DimNames(bounds={n: hi for n, (_, hi) in ranges.now.items()}, static=static,
                    lows={n: lo for n, (lo, _) in ranges.now.items()}, retries=ranges.notes(),
                    multiples={n: m for n, (m, _) in multiples.items()})
    if deferred:
        dims.retries.append(f"torch.export could not prove the guard {deferred} for every size; captured with it "
                            "checked when the graph runs (a runtime assertion)")
    for node in gm.graph.nodes:
        if node.op == "placeholder" and node.name in inputs:
            val = node.meta.get("val")
            for axis, dim_name in (dynamic.get(node.name) or {}).items():
                size = val.shape[axis]
                if isinstance(size, torch.SymInt):
                    dims.names[str(size.node.expr)] = dim_name
                    if dim_name in multiples:
                        _multiple_range(dims, dim_name, size, ep.range_constraints)
                dims.examples[dim_name] = int(inputs[node.name].shape[axis])
    for dim, (m, guard) in multiples.items():
        dims.retries.append(f"{dim} is a multiple of {m} ({dims.lows[dim]} ≤ {dim} ≤ {dims.bounds[dim] or '∞'}): the "
                            f"model's code cuts it into windows of {m} and guards {guard}, which no range can prove")
    return gm, dims, _output_names(ep)


def _round_up(inputs: dict[str, torch.Tensor], dynamic: dict, name: str, m: int) -> None:
    """Make dim `name` of every example input a multiple of `m` (the next one up; its first values repeated)."""
    for key, axes in dynamic.items():
        for axis, dim_name in axes.items():
            if dim_name == name and key in inputs:
                size = inputs[key].shape[axis]
                new = -(-size // m) * m
                index = torch.arange(new, device=inputs[key].device) % size
                inputs[key] = inputs[key].index_select(axis, index)


def _multiple_range(dims: DimNames, name: str, size: torch.SymInt, constraints: dict) -> None:
    """The range of a dim captured as m × another dim, from torch.export's range of that other dim (it narrows the
    range it was given where the code needs it, e.g. at least three windows)."""
    m = dims.multiples[name]
    for symbol in size.node.expr.free_symbols:
        vr = constraints.get(symbol)
        if vr is not None:
            dims.lows[name] = max(dims.lows.get(name, 2), m * int(vr.lower))
            if vr.upper.is_finite and int(vr.upper) < 10**9:
                hi = m * int(vr.upper)
                dims.bounds[name] = min(dims.bounds[name], hi) if dims.bounds.get(name) else hi


def _attn(model: torch.nn.Module) -> str | None:
    """The attention implementation a Hugging Face model runs with (None for other modules)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def _next_bound(ranges: Ranges, fallback: list[int | None]) -> bool:
    """Bound the sequence dims at the next of `fallback` not tried yet (False: none left)."""
    while fallback:
        if ranges.widen_seq(fallback.pop(0)):
            return True
    return False


def _export(model, inputs, dynamic, extra_kwargs, ranges: dict[str, tuple[int, int | None]], deferred: bool = False,
            multiples: dict | None = None):
    """One torch.export attempt with each dynamic dim in its range (max None: no maximum); `deferred`: guards
    torch.export cannot prove become runtime assertions in the graph; `multiples`: dims captured as m × a dim."""
    dim_objs = {n: _dim(n, lo, hi, (multiples or {}).get(n, (1,))[0]) for n, (lo, hi) in ranges.items()}
    shapes = {k: ({ax: dim_objs[n] for ax, n in dynamic[k].items()} if dynamic.get(k) else None) for k in inputs}
    kwargs = dict(inputs)
    for k, v in (extra_kwargs or {}).items():
        kwargs[k] = v
        shapes[k] = None
    with torch._dynamo.config.patch(fake_tensor_cache_enabled=False):  # see FAKE_TENSOR_CACHE
        return torch.export.export(model, (), kwargs, dynamic_shapes=shapes, strict=False,
                                   prefer_deferred_runtime_asserts_over_guards=deferred)


def _dim(name: str, lo: int, hi: int | None, m: int = 1):
    """Dim(name, min=lo, max=hi); with m > 1, m × Dim('_name') over the multiples of m in [lo, hi]."""
    if m == 1:
        return Dim(name, min=lo, max=hi) if hi is not None else Dim(name, min=lo)
    k_lo = max(1, -(-lo // m))
    return m * (Dim(f"_{name}", min=k_lo, max=hi // m) if hi is not None else Dim(f"_{name}", min=k_lo))


def seq_bound_note(dims: DimNames, fixed: bool = True) -> str:
    """One line on the dims not captured as first tried: fixed by the model's code (when `fixed`), or another range
    ("" if none)."""
    notes = [f"{n} is fixed at {v}: the model's code does not allow another {n} length"
             for n, v in getattr(dims, "static", {}).items() if fixed]
    return "; ".join(notes + list(getattr(dims, "retries", [])))


def _output_names(ep) -> list[str]:
    """One name per output tensor: the output's key ("logits"); under a key that holds several tensors, the key and
    the position (XLNet's `mems`: "mems_0", "mems_1"), so "logits" keeps its name; else output0, output1, …"""
    spec = ep.call_spec.out_spec
    ctx = getattr(spec, "context", None)
    n = spec.num_leaves
    if isinstance(ctx, (list, tuple)) and all(isinstance(c, str) for c in ctx):
        if len(ctx) == n:
            return list(ctx)
        children = spec.children()
        if len(children) == len(ctx):
            names = [k if c.is_leaf() else f"{k}_{i}" for k, c in zip(ctx, children) for i in range(c.num_leaves)]
            if len(set(names)) == n and all(k.isidentifier() for k in names):
                return names
    return ["output"] if n == 1 else [f"output{i}" for i in range(n)]


def forward_accepts(model: torch.nn.Module, arg: str, named: bool = False) -> bool:
    """Whether the forward takes `arg` (named: as a parameter of its own, not only through **kwargs)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or (not named and any(p.kind == p.VAR_KEYWORD for p in params.values()))


def capture_hf_model(model: torch.nn.Module, *, name: str, weights: str, config: dict | None,
                     attn: str, materializer=None, replicate: bool = True, progress=None) -> CapturedModel:
    """Capture a Hugging Face model with (batch, seq) dynamic token inputs and its HF conventions recorded.

    Encoder-decoder models (T5, BART) also get decoder_input_ids with their own dynamic length `dec_seq`.
    replicate: capture a shallow twin (two layers of each layer kind) and replicate its layers to full depth
    (capture/replicate.py); a model whose layers cannot be shown alike is captured whole, and a note says why.
    progress: called with one line of text on what runs, at most every half second or so.
    """
    note = ""
    if replicate:
        cm, note = _capture_replicated(model, name=name, weights=weights, config=config, attn=attn,
                                       materializer=materializer, progress=progress)
        if cm is not None:
            return cm
    if progress is not None:
        progress(f"capturing {name} (torch.export)")
    cm = _capture_whole(model, name=name, weights=weights, config=config, attn=attn, materializer=materializer)
    if note:
        cm.notes.append(note)
    return cm


def _capture_replicated(model, *, progress, **kw) -> tuple[CapturedModel | None, str]:
    """(the capture grown from a shallow twin, "") — or (None, why not) when it cannot be shown equal."""
    from graphsurgeon.capture.replicate import NotReplicable, build_twin, plan
    from graphsurgeon.capture.replicate_graph import attr_order_holds, expand

    the_plan = None
    try:
        the_plan = plan(model)
        if the_plan is None:
            return None, ""
        twin = build_twin(model, the_plan)
        if progress is not None:
            progress(f"capturing {kw['name']}: {the_plan.summary()} (torch.export)")
        cm = _capture_whole(twin, **kw)
        if not attr_order_holds(cm.gm, twin):
            raise NotReplicable("its parameters are not read in the model's order")
        expand(cm.gm, model, the_plan.stacks, progress)
    except Exception as why:  # noqa: BLE001 - whatever stops replication, the full capture below still stands
        if not isinstance(why, (NotReplicable, CaptureError)) and os.environ.get("GRAPHSURGEON_STRICT"):
            raise  # tests: a bug in replication is a failure, not a slow capture
        depth = f"all {the_plan.stacks[0].length} layers" if the_plan else "every layer"
        return None, f"captured {depth} one by one: a layer could not be replicated ({why})"
    _no_cache(model)
    cm.module_classes = {p: type(m).__name__ for p, m in model.named_modules()}
    cm.not_for_peft = not_for_peft(model)
    cm.replicated = the_plan.summary()
    return cm, ""


def _capture_whole(model: torch.nn.Module, *, name: str, weights: str, config: dict | None,
                   attn: str, materializer=None) -> CapturedModel:
    """torch.export of the model as it is, every layer traced."""
    device = "meta" if any(p.is_meta for p in model.parameters()) else "cpu"
    inputs = example_token_inputs(model, device, token_input_names(model))
    dynamic = default_dynamic(inputs)
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False) and forward_accepts(model, "decoder_input_ids"):
        gen = torch.Generator().manual_seed(1)
        vocab = int(getattr(model.config, "vocab_size", 100) or 100)
        inputs["decoder_input_ids"] = torch.randint(0, vocab, (EXAMPLE_BATCH, EXAMPLE_SEQ - 3), generator=gen).to(device)
        dynamic["decoder_input_ids"] = {0: "batch", 1: "dec_seq"}
    limit = max_positions(model)
    packed = packs_sequences(model, inputs)  # run before capture turns the KV cache off, as the user runs it
    gm, dims, outputs = export_module(model, inputs, dynamic=dynamic, max_seq=limit, name=name)
    notes = [note] if (note := record_train_dropout(model, gm, inputs)) else []
    ids = next(n for n in gm.graph.nodes if n.op == "placeholder" and n.name == "input_ids")
    if mark_position_ids_default(gm, ids.meta["val"].shape[1]) is not None and packed:
        mark_packed_sequences(gm)
    cm = CapturedModel(
        gm=gm, dims=dims, model_class=type(model).__name__, source_name=name, weights=weights,
        input_names=list(inputs), output_names=outputs, example_inputs=inputs, config=config,
        module_classes={p: type(m).__name__ for p, m in model.named_modules()},
        not_for_peft=not_for_peft(model),
        attn_implementation=attn, materializer=materializer, notes=notes,
        optional_inputs={n: OPTIONAL_TOKEN_INPUTS[n] for n in inputs if n in OPTIONAL_TOKEN_INPUTS},
        hf_loss=hf_loss_spec(model, forward_accepts(model, "labels"), outputs),
        decoder_default=decoder_input_default(model, inputs),
    )
    note = seq_bound_note(dims)
    if note:
        cm.notes.append(note)
    return cm


def _no_cache(model: torch.nn.Module) -> None:
    """use_cache=False on every config the model's modules hold (T5's decoder stack and multimodal text models
    keep their own): no KV cache in the graph, one forward over the whole sequence."""
    seen: set[int] = set()
    for module in model.modules():
        cfg = getattr(module, "config", None)
        stack = [cfg]
        while stack:
            c = stack.pop()
            if c is None or id(c) in seen or not hasattr(c, "to_dict"):
                continue
            seen.add(id(c))
            if getattr(c, "use_cache", False):
                c.use_cache = False
            stack.extend(getattr(c, name, None) for name in ("text_config", "decoder", "encoder"))
