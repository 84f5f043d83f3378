"""CapturedModel: the fx GraphModule (the single source of truth) and what capture knew about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx

from graphsurgeon.graph.meta import DimNames


@dataclass
class CapturedModel:
    """One captured model. Edits change `gm` in place and then call `touch()`."""

    gm: torch.fx.GraphModule  # the truth: unlifted export graph, parameters under their state-dict names
    dims: DimNames  # symbol -> dim name ("batch", "seq") and example sizes
    model_class: str  # e.g. "GPT2LMHeadModel"
    source_name: str  # preset name, folder path or "<module>"
    weights: str  # "real", "random", "partial" (real, some tensors random: --allow-missing-weights) or "meta" (architecture only)
    input_names: list[str]  # keyword inputs of forward, e.g. ["input_ids", "attention_mask"]
    output_names: list[str]  # names of the outputs, e.g. ["logits"]
    example_inputs: dict[str, torch.Tensor]  # the inputs capture used (on the capture device)
    config: dict[str, Any] | None = None  # the Hugging Face config as a dict, when there is one
    module_classes: dict[str, str] = field(default_factory=dict)  # module path -> class name
    not_for_peft: dict[str, str] = field(default_factory=dict)  # path -> class of a layer PEFT cannot adapt
    attn_implementation: str | None = None  # "sdpa" or "eager" when the source is Hugging Face
    materializer: Callable[[], torch.nn.Module] | None = None  # builds the model with weights, for meta captures
    loras: dict[str, Any] = field(default_factory=dict)  # LoRA block path -> surgery.spec.LoRABlock, in insertion order
    weights_note: str = ""  # one line on where the weights came from
    notes: list[str] = field(default_factory=list)  # what capture chose or could not record (eager attention, a seq bound, dropout)
    materializes_to: str = ""  # for a meta capture: the `weights` materialize() will give ("" = unknown)
    materialize_note: str = ""  # for a meta capture: the weights_note materialize() will give
    optional_inputs: dict[str, str] = field(default_factory=dict)  # input -> "ones"/"zeros" like the first input when omitted (HF)
    replicated: str = ""  # what capture replicated instead of tracing ("model.layers: 2 of 80 layers captured")
    hf_loss: dict | None = None  # {"loss_type", "num_labels", "problem_type"}: the loss HF computes from labels
    decoder_default: dict | None = None  # {"sources", "start", "pad"}: HF's decoder_input_ids when not given
    kv_cache_off: str = ""  # why model.py keeps no KV cache: its cached path failed the export's self-check
    sizes_fixed: str = ""  # why model.py's Config pins some sizes: at a second config it failed the export's self-check
    sizes_fixed_fields: dict[str, Any] = field(default_factory=dict)  # the config fields its Config pins (values)
    sizes_literal: bool = False  # every size in model.py's classes a literal (not only the pinned fields')
    version: int = 0  # bumped by every edit so derived views know they are stale
    recall: bool = True  # keep the derived views of the last few states for an undo (graph/recall.py); a one-shot
    # command that never edits turns it off: the fingerprint of a 5,000-layer graph costs ~1.6 CPU s
    _blocks: Any = field(default=None, repr=False)
    _semantics: Any = field(default=None, repr=False)
    _derived: dict | None = field(default=None, repr=False)  # derived views of the current graph state
    _recall: Any = field(default=None, repr=False)  # graph.recall.Recall: those of the last few states (undo)

    def touch(self) -> None:
        """Mark the graph as changed (after an edit); derived views are rebuilt on next use — or recalled when the
        graph is back in a state it was in before (an undo), see graph/recall.py."""
        self.version += 1
        self._blocks = None
        self._semantics = None
        self._derived = None

    def blocks(self):
        """The block view of the current graph (cached until the next `touch`)."""
        if self._blocks is None:
            from graphsurgeon.graph.gc_pause import paused_gc
            from graphsurgeon.graph.view import BlockGraph

            with paused_gc():  # millions of long-lived objects at 5,000 layers: see graph/gc_pause.py
                derived = self._state()
                if "blocks" not in derived:
                    derived["blocks"] = BlockGraph(self)
            self._blocks = derived["blocks"]
        return self._blocks

    def semantics(self):
        """Roles, display names, function groups and layer stacks of the current graph (cached until `touch`)."""
        if self._semantics is None:
            from graphsurgeon.graph.gc_pause import paused_gc
            from graphsurgeon.graph.semantics import Semantics

            with paused_gc():
                derived = self._state()
                if "semantics" not in derived:
                    derived["semantics"] = Semantics(self)
            self._semantics = derived["semantics"]
        return self._semantics

    def _state(self) -> dict:
        """Where the current graph state's derived views live: an identical earlier state's, or a new entry."""
        if self._derived is None and not self.recall:
            self._derived = {}
        if self._derived is None:
            from graphsurgeon.graph.recall import Recall, fingerprint

            if self._recall is None:
                self._recall = Recall()
            state, keep = fingerprint(self)
            self._derived = self._recall.find(state)
            if self._derived is None:
                self._derived = {}
                self._recall.store(state, keep, self._derived)
        return self._derived

    @property
    def is_meta(self) -> bool:
        return any(p.is_meta for p in self.gm.parameters())

    def parameter_count(self, prefix: str = "") -> int:
        """Parameters of the module at `prefix` ("" = whole model), each shared tensor once."""
        head = prefix + "." if prefix else ""
        return sum(p.numel() for name, p in self.gm.named_parameters() if not prefix or name.startswith(head))

    def materialize(self) -> None:
        """Give a meta (architecture-only) capture real or random weights, in place."""
        if not self.is_meta:
            return
        if self.materializer is None:
            from graphsurgeon.errors import GraphsurgeonError

            raise GraphsurgeonError(
                f"{self.source_name} was captured without weights and has no way to load them; "
                "capture it again without --meta."
            )
        model = self.materializer()
        tensors = dict(model.named_parameters(remove_duplicate=False))
        tensors.update(dict(model.named_buffers(remove_duplicate=False)))
        made: dict[int, torch.Tensor] = {}  # one new tensor per source tensor, so tied weights stay tied
        for name, old in list(self.gm.named_parameters(remove_duplicate=False)) + list(self.gm.named_buffers(remove_duplicate=False)):
            new = tensors.get(name)
            owner_path, _, leaf = name.rpartition(".")
            owner = self.gm.get_submodule(owner_path) if owner_path else self.gm
            if new is not None:
                if id(new) not in made:
                    made[id(new)] = (torch.nn.Parameter(new.detach(), requires_grad=old.requires_grad)
                                     if isinstance(old, torch.nn.Parameter) else new.detach())
                setattr(owner, leaf, made[id(new)])
            elif old.is_meta and hasattr(owner, "reset_parameters"):
                owner.to_empty(device="cpu")
                owner.reset_parameters()
        move_device_constants(self.gm, torch.device("meta"), torch.device("cpu"))
        self.weights = getattr(model, "_graphsurgeon_weights", "random")
        self.weights_note = getattr(model, "_graphsurgeon_note", self.materialize_note or self.weights_note)
        self.example_inputs = {k: (torch.ones if self.optional_inputs.get(k) == "ones" else torch.zeros)(v.shape, dtype=v.dtype)
                               if v.is_meta else v for k, v in self.example_inputs.items()}
        self.touch()

    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the graph and return its outputs by name; omitted optional inputs get their defaults."""
        first = inputs.get(self.input_names[0]) if self.input_names else None
        for name, fill in self.optional_inputs.items():
            if inputs.get(name) is None and first is not None:
                inputs[name] = torch.ones_like(first) if fill == "ones" else torch.zeros_like(first)
        out = self.gm(**inputs)
        if isinstance(out, dict) or hasattr(out, "keys"):
            return {k: out[k] for k in out.keys()}
        if isinstance(out, (tuple, list)):
            return dict(zip(self.output_names, out))
        return {self.output_names[0]: out}


def move_device_constants(gm: torch.fx.GraphModule, old: torch.device, new: torch.device) -> None:
    """Rewrite device arguments baked into ops (arange(..., device=meta)) from `old` to `new`."""

    def swap(a):
        if isinstance(a, torch.device) and a.type == old.type:
            return new
        if isinstance(a, (list, tuple)):
            return type(a)(swap(x) for x in a)
        return a

    changed = False
    for node in gm.graph.nodes:
        args, kwargs = swap(node.args), {k: swap(v) for k, v in node.kwargs.items()}
        if args != node.args or kwargs != node.kwargs:
            node.args, node.kwargs = args, kwargs
            changed = True
    if changed:
        gm.recompile()
