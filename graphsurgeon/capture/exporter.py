"""torch.export (non-strict) of a model into a CapturedModel with named dynamic dims."""

from __future__ import annotations

import inspect
import traceback

import torch
from torch.export import Dim

from graphsurgeon.errors import CaptureError
from graphsurgeon.graph.captured import CapturedModel
from graphsurgeon.graph.meta import DimNames
from graphsurgeon.graph.tidy import tidy

EXAMPLE_BATCH, EXAMPLE_SEQ = 2, 10  # the walkthrough's example sizes


def example_token_inputs(model: torch.nn.Module, device: str, with_mask: bool) -> dict[str, torch.Tensor]:
    """input_ids (and attention_mask) of shape (2, 10) for a Hugging Face model."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 100) or 100)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (EXAMPLE_BATCH, EXAMPLE_SEQ), generator=gen)
    inputs = {"input_ids": ids.to(device)}
    if with_mask:
        inputs["attention_mask"] = torch.ones(EXAMPLE_BATCH, EXAMPLE_SEQ, dtype=torch.long, device=device)
    return inputs


def max_positions(model: torch.nn.Module) -> int:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
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
    """Export `model(**inputs, **extra_kwargs)`; returns the unlifted GraphModule, dim names, output names."""
    dynamic = default_dynamic(inputs) if dynamic is None else dynamic
    dim_objs: dict[str, Dim] = {}
    for axes in dynamic.values():
        for dim_name in axes.values():
            if dim_name not in dim_objs:
                hi = max_seq if dim_name == "seq" and max_seq else 4096
                dim_objs[dim_name] = Dim(dim_name, min=1 if dim_name == "batch" else 2, max=hi)
    shapes = {k: ({ax: dim_objs[n] for ax, n in dynamic[k].items()} if k in dynamic else None) for k in inputs}
    kwargs = dict(inputs)
    for k, v in (extra_kwargs or {}).items():
        kwargs[k] = v
        shapes[k] = None
    try:
        ep = torch.export.export(model, (), kwargs, dynamic_shapes=shapes, strict=False)
    except Exception as err:  # noqa: BLE001 - translated to one sentence
        raise CaptureError(_explain_failure(err, name)) from err
    gm = ep.module()
    tidy(gm)
    dims = DimNames()
    for node in gm.graph.nodes:
        if node.op == "placeholder" and node.name in dynamic:
            val = node.meta.get("val")
            for axis, dim_name in dynamic[node.name].items():
                size = val.shape[axis]
                if isinstance(size, torch.SymInt):
                    dims.names[str(size.node.expr)] = dim_name
                dims.examples[dim_name] = int(inputs[node.name].shape[axis])
    return gm, dims, _output_names(ep)


def _output_names(ep) -> list[str]:
    spec = ep.call_spec.out_spec
    ctx = getattr(spec, "context", None)
    n = spec.num_leaves
    if isinstance(ctx, (list, tuple)) and len(ctx) == n and all(isinstance(c, str) for c in ctx):
        return list(ctx)
    return ["output"] if n == 1 else [f"output{i}" for i in range(n)]


def _explain_failure(err: BaseException, name: str) -> str:
    """One sentence: where export failed (module class, op) and what to try."""
    where = ""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if "/transformers/" in frame.filename or ("/torch/" not in frame.filename and "graphsurgeon" not in frame.filename):
            module = frame.filename.rsplit("/", 1)[-1]
            where = f" in {module}:{frame.lineno} ({frame.name}: `{(frame.line or '').strip()[:80]}`)"
            break
    msg = str(err).strip().splitlines()
    first = msg[0][:200] if msg else type(err).__name__
    return (f"torch.export could not capture {name}{where}: {first}. "
            "Try eager attention (--eager-attention), which spells attention out as matmul/softmax ops.")


def forward_accepts(model: torch.nn.Module, arg: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def is_decoder(model: torch.nn.Module) -> bool:
    """Causal LMs (GPT-2, Llama, OPT, …) are captured with input_ids only and use_cache=False."""
    cls = type(model).__name__
    cfg = getattr(model, "config", None)
    return cls.endswith(("ForCausalLM", "LMHeadModel")) or bool(getattr(cfg, "is_decoder", False)) or \
        getattr(cfg, "model_type", "") in {"gpt2", "gpt_bigcode", "llama", "opt", "mistral", "gpt_neox", "qwen2", "phi"}


def capture_hf_model(model: torch.nn.Module, *, name: str, weights: str, config: dict | None,
                     attn: str, materializer=None) -> CapturedModel:
    """Capture a Hugging Face model with (batch, seq) dynamic token inputs."""
    device = "meta" if any(p.is_meta for p in model.parameters()) else "cpu"
    decoder = is_decoder(model)
    inputs = example_token_inputs(model, device, with_mask=not decoder and forward_accepts(model, "attention_mask"))
    if getattr(getattr(model, "config", None), "use_cache", False):
        model.config.use_cache = False  # no KV cache in the graph: one forward over the whole sequence
    gm, dims, outputs = export_module(model, inputs, max_seq=max_positions(model), name=name)
    return CapturedModel(
        gm=gm, dims=dims, model_class=type(model).__name__, source_name=name, weights=weights,
        input_names=list(inputs), output_names=outputs, example_inputs=inputs, config=config,
        module_classes={p: type(m).__name__ for p, m in model.named_modules()},
        attn_implementation=attn, materializer=materializer,
    )
