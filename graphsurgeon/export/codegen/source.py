"""model.py as text: the module docstring, constants, helper layers, functions, classes and load_model.

Every class and function is a `Section`: its lines with the canvas blocks each line writes, so the editor's
Code panel can show one composite's code and map lines to blocks both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from graphsurgeon.export.codegen.classes import ClassDef, FunctionDef, Model
from graphsurgeon.export.codegen.scopes import lora_export_name
from graphsurgeon.export.codegen.body import Body
from graphsurgeon.export.codegen.writer import FunctionWriter

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
IND = "    "


@dataclass
class Section:
    """One class or function of model.py."""

    name: str
    lines: list[str] = field(default_factory=list)
    blocks: list[tuple] = field(default_factory=list)  # per line: the canvas block ids it writes

    def add(self, text: str, blocks: tuple = ()) -> None:
        self.lines.append(text)
        self.blocks.append(blocks)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _body_lines(sec: Section, body: Body, indent: str) -> None:
    for ln in body.lines:
        sec.add(indent + IND * ln.depth + ln.full, ln.blocks)
    if body.returns:
        sec.add(indent + "return " + ", ".join(body.returns))


def function_section(f: FunctionDef) -> Section:
    sec = Section(f.name)
    params = list(f.body.params) + (["training"] if f.body.training else []) + list(f.body.extras)
    sec.add(f"def {f.name}({', '.join(params)}):")
    _body_lines(sec, f.body, IND)
    return sec


def class_section(model: Model, c: ClassDef, forward_sig: str | None = None, prologue: list[str] = (),
                  epilogue: list[str] | None = None, extra_init: list[str] = ()) -> Section:
    sec = Section(c.name)
    numbered = c.path in model.lists  # its children are 0, 1, …: read as self[0] (a list with a forward)
    sec.add(f"class {c.name}({'nn.ModuleList' if numbered else 'nn.Module'}):", (f"m:{c.path}",))
    cls = model.cm.module_classes.get(c.path) or model.cm.model_class
    sec.add(f'{IND}"""{_doc(c, cls)}"""')
    sec.add("")
    args = "".join(f", {k}_shape: tuple" for k in c.varying)
    sec.add(f"{IND}def __init__(self, config{args}) -> None:")
    sec.add(f"{IND * 2}super().__init__()")
    base = c.path
    for line in list(c.init) + list(extra_init):
        attr = re.match(r"self\.([\w.]+) = |self\.(?:register_buffer|add_module)\(\"(\w+)\"", line)
        rel = (attr.group(1) or attr.group(2)) if attr else ""
        path = f"{base}.{rel}" if base else rel
        known = path in model.children or path in model.tensors
        sec.add(IND * 2 + line, (f"m:{path}",) if rel and known else ())  # not `self.head_dim = …`
    if c.init_buffers:
        sec.add("")
        sec.add(f"{IND}def init_buffers(self, config) -> None:")
        doc = '"""Non-persistent buffers, computed from the config (load_model calls it again after meta)."""'
        sec.add(IND * 2 + doc)
        for line in c.init_buffers:
            sec.add(IND * 2 + line)
    if c.body is not None:
        sec.add("")
        params = ", ".join(["self"] + list(c.body.params)) if forward_sig is None else forward_sig
        sec.add(f"{IND}def forward({params}):")
        for p in prologue:
            sec.add(IND * 2 + p)
        for ln in c.body.lines:
            sec.add(IND * 2 + IND * ln.depth + ln.full, ln.blocks)
        for line in epilogue if epilogue is not None else ["return " + ", ".join(c.body.returns)]:
            sec.add(IND * 2 + line)
    return sec


def _doc(c: ClassDef, cls: str) -> str:
    n = len(c.instances)
    if not c.instances:
        return f"{cls}: holds tensors the model reads."
    if not c.path:
        return f"{cls}: forward(**inputs) returns its named outputs (out.logits, out[0])."
    where = c.instances[0].path
    more = f" and {n - 1} more alike" if n > 1 else ""
    return f"{cls} ({where}{more})."


def loras_table(cm) -> dict:
    """LoRA module path -> what builds it (train.py reads the scalings). `of`: the adapted projection's whole output
    width here, where the LoRA adapts a projection (its sizes then follow the projection's at any config)."""
    out = {}
    for b in cm.loras.values():
        t, c = b.target, b.config
        kind = "update" if (t.is_slice or not b.mergeable) else t.kind
        whole = projection_width(cm, t.module) if b.mergeable else None
        out[lora_export_name(b)] = dict(kind=kind, in_features=t.in_features, out_features=t.out_features,
                                        **({"of": whole} if whole else {}),
                                        r=c.r, scaling=float(c.scaling), dropout=float(c.dropout))
    return out


def projection_width(cm, module: str) -> int | None:
    """The output width of the projection at `module` (its weight's out side), None when it has no 2-D weight."""
    weight = dict(cm.gm.named_parameters()).get(f"{module}.weight")
    if weight is None:
        return None
    kind = cm.module_classes.get(module, "")
    return int(weight.shape[1] if kind == "Conv1D" else weight.shape[0])


def root_section(model: Model) -> Section:
    """The model class: HF-style forward (export/hf_forward: inputs by keyword with Hugging Face's defaults,
    its named outputs as a ModelOutput, `loss` from labels)."""
    from graphsurgeon.export import hf_forward

    cm = model.cm
    root = model.root
    w = FunctionWriter(model.env, model.prog.root)
    placeholders = {n.name: n for n in cm.gm.graph.nodes if n.op == "placeholder"}
    params = [placeholders[n] for n in cm.input_names if n in placeholders]
    params += [p for p in model.prog.root.inputs if p.graph is not cm.gm.graph]  # position_ids
    out_node = next(n for n in cm.gm.graph.nodes if n.op == "output")
    flat = out_node.args[0]
    flat = list(flat) if isinstance(flat, (list, tuple)) else [flat]
    body = w.write(params, [p.name for p in params])
    body.returns = []
    outs = {name: (w.arg(v) if v is not None else "None") for name, v in zip(cm.output_names, flat)}
    root.body = body
    root.init = model.root_init()  # numbers its forward reads (Cohere's logit_scale), then its modules
    extra = (["add_lora(self)"] if cm.loras else []) + (["tie_weights(self)"] if _tied(model) else [])
    cached = bool(model.kv_paths)
    keeps = model.generates and hf_forward.lm_head_input(cm) is not None and _keep_logits(body, w, model)
    return class_section(model, root, forward_sig=f"self, {hf_forward.signature(cm, cached, keeps)}",
                         prologue=hf_forward.prologue(cm, cached), epilogue=hf_forward.epilogue(cm, outs, cached),
                         extra_init=extra)


def _at_top(model: Model, hidden):
    """The value the model's own forward passes on towards the LM head: `hidden` itself, or the input of the module
    call it is made in (a prediction head whose last Linear is the LM head: ModernBERT-decoder's dense, norm)."""
    hidden = model.prog.rep(hidden)
    scope = model.prog.owner.get(hidden)
    while scope is not None and scope.parent is not None and scope.parent.kind != "root":
        scope = scope.parent
    if scope is None or scope.kind == "root":
        return hidden
    return next((v for v in scope.inputs if _dims(v) == 3), hidden)  # none: the backbone itself made it


def _dims(node) -> int:
    val = node.meta.get("val")
    return val.dim() if isinstance(val, torch.Tensor) else -1


def _keep_logits(body: Body, w: FunctionWriter, model: Model) -> bool:
    """Hugging Face's `logits_to_keep`: the head reads the last positions only (0: all), as HF slices before its
    lm_head (generate's prefill computes the next token's logits, not every position's). False when the head's
    input has no name at the top of the forward (a cast written inside the head's call): no logits_to_keep."""
    from graphsurgeon.export import hf_forward

    try:
        hidden = w.arg(_at_top(model, hf_forward.lm_head_input(model.cm)))
    except NotImplementedError:
        return False
    for ln in body.lines:
        call = re.search(rf"(self\.[\w.]+)\({re.escape(hidden)}\)", ln.text)
        if call and ln.depth == 0:
            ln.text = ln.text.replace(call.group(0), f"{call.group(1)}({hidden}[:, -logits_to_keep:])")
            return True
    return False


def _tied(model: Model) -> bool:
    from graphsurgeon.export.codegen.scopes import tensor_aliases

    return any(len(v) > 1 for v in tensor_aliases(model.cm.gm).values())


def helpers_text(needed: set[str]) -> str:
    """The helper layers and functions model.py uses (Conv1D, LoRA, LoRALinear, LoRAConv1D, grouped_mm, rotate_half), from the
    template."""
    text = (TEMPLATES / "model_layers.py").read_text(encoding="utf-8")
    chunks = re.split(r"\n(?=class |def )", text)
    keep = []
    for chunk in chunks:
        name = re.match(r"(?:class|def) (\w+)", chunk.strip()).group(1)
        if name in needed:
            keep.append(chunk.strip("\n"))
    return "\n\n\n".join(keep)


def needed_helpers(code: str, loras: dict) -> set[str]:
    need = {n for n in ("Conv1D", "LoRA", "LoRALinear", "LoRAConv1D", "LoRAConv1x1", "grouped_mm", "rotate_half",
            "_get_alibi_slopes")
            if re.search(rf"\b{n}\(", code)}
    kinds = {hp["kind"] for hp in loras.values()}
    need |= {"LoRA"} if "update" in kinds else set()
    need |= {"LoRALinear"} if "linear" in kinds else set()
    need |= {"LoRAConv1D", "Conv1D"} if "conv1d" in kinds else set()
    need |= {"LoRAConv1x1"} if "conv1x1" in kinds else set()
    return need
