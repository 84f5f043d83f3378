"""The code generator: model.py a person would write, from the captured fx graph (no Qt).

Rooms: `lift` (aten → torch.nn.functional / tensor methods, one table), `scopes` (module calls, function groups
and LoRA updates as function bodies; CSE, DCE), `leaves` (torch.nn layers recognised by what they compute),
`writer` (one body: names, folding, shape comments, loops), `classes` (one class per block kind), `source`
(the text), `names` (the one adapter to the semantic layer the canvas reads too).

    model_source(cm)          -> the text of model.py
    composite_code(cm, path)  -> the class / function of one composite, with its line <-> block map
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from graphsurgeon.export.codegen import layout, names
from graphsurgeon.export.codegen.classes import Model
from graphsurgeon.export.codegen.fastpath import is_causal_lm
from graphsurgeon.export.codegen.scopes import lora_export_name
from graphsurgeon.export.codegen.source import (TEMPLATES, Section, class_section, function_section, helpers_text,
                                                loras_table, needed_helpers, root_section)

SAFETENSORS_IMPORT = """try:
    from safetensors.torch import {names}
except ImportError:  # the weights are safetensors, never pickle
    raise ImportError("{file} needs the safetensors package to read model.safetensors: pip install safetensors") from None"""

__all__ = ["CodeView", "GeneratedModel", "aten_calls", "composite_code", "generate", "lora_export_name",
           "model_source"]


@dataclass
class GeneratedModel:
    """model.py in sections (one per function and class), built once per graph version."""

    text: str
    sections: list[Section]
    model: Model
    section_of_path: dict[str, Section] = field(default_factory=dict)  # composite path -> its section


@dataclass
class CodeView:
    """The code of one composite for the editor: its text and which lines write which canvas blocks."""

    path: str
    title: str  # class or function name
    text: str
    line_blocks: list[tuple]  # per line (0-based): block ids it writes
    block_lines: dict[str, list[int]]  # block id -> lines (0-based)


def generate(cm) -> GeneratedModel:
    """Build (or reuse, until the graph changes) the generated model."""
    cached = getattr(cm, "_codegen", None)
    if cached is not None and cached[0] == cm.version:
        return cached[1]
    from graphsurgeon.export.modelpy import export_tensors

    tensors, tied, buffers = export_tensors(cm)
    model = Model(cm, tensors, set(buffers), tied)
    functions = [function_section(f) for f in model.functions]
    classes = [class_section(model, c) for c in model.classes]
    root = root_section(model)
    sections = functions + classes + [root]
    for sec in sections:  # laid out as ruff format would (a long line split: each part keeps the line's blocks)
        parts = layout.format_lines(sec.lines)
        sec.blocks = [b for b, lines in zip(sec.blocks, parts) for _ in lines]
        sec.lines = [line for lines in parts for line in lines]
    body = "\n\n\n".join(s.text for s in sections)
    loras = loras_table(cm)
    helpers = helpers_text(needed_helpers(body, loras))
    head = _head(cm, tied, tensors, loras, model.kv_paths)
    tail = (TEMPLATES / "model_tail.py").read_text(encoding="utf-8")
    if not cm.loras:
        tail = tail[tail.index("def tie_weights"):]
    else:
        tail = _lora_kinds_only(tail, {hp["kind"] for hp in loras.values()})
    hf = (TEMPLATES / "hf_functions.py").read_text(encoding="utf-8")
    config = model.config.dataclass_text()
    if "field(default_factory" in config:  # a dict field (rope_parameters)
        head = head.replace("import dataclass, fields", "import dataclass, field, fields")
    if re.search(r"\bmath\.", body):  # `math.sqrt(self.attention_head_size)`, as Hugging Face writes it
        head = head.replace("import json\nimport os\n", "import json\nimport math\nimport os\n")
    aliases = f"Model = {model.root.name}\nConfig = {model.config.class_name}"
    parts = [head, config] + ([helpers] if helpers else []) + [body, aliases, hf, tail]
    if model.kv_paths:  # a causal LM whose attentions are SDPA's: its KV cache
        parts.insert(-2, (TEMPLATES / "model_kvcache.py").read_text(encoding="utf-8"))
    if model.generates:  # any causal LM with HF's inputs: generate() (without a cache, slower but the same tokens)
        parts.insert(-2, (TEMPLATES / "model_generate.py").read_text(encoding="utf-8"))
        parts.append(f"{model.root.name}.generate = generate")
    text = layout.format_source("\n\n\n".join(p.strip("\n") for p in parts) + "\n")
    gen = GeneratedModel(text, sections, model)
    for c, sec in zip(model.classes, classes):
        for s in c.instances:
            gen.section_of_path[s.path] = sec
        gen.section_of_path.setdefault(c.path, sec)
    for f, sec in zip(model.functions, functions):
        for s in f.instances:
            gen.section_of_path[s.path] = sec
    gen.section_of_path[""] = root
    for path, parent in names.group_paths(cm).items():  # groups the code keeps inline: their module's code
        gen.section_of_path.setdefault(path, gen.section_of_path.get(parent, root))
    for stack in cm.semantics().stacks:  # a run of alike layers: their class
        for run in stack.runs:
            if run and run[0] in gen.section_of_path:
                gen.section_of_path.setdefault(stack.run_path(run), gen.section_of_path[run[0]])
    try:
        cm._codegen = (cm.version, gen)
    except AttributeError:  # pragma: no cover - a frozen stand-in
        pass
    return gen


def model_source(cm) -> str:
    """The full text of model.py."""
    return generate(cm).text


def composite_code(cm, path: str) -> CodeView | None:
    """The class (module composites) or function (function groups) that writes composite `path`, with the canvas
    block ids of each line for the instance at `path` (layers share a class; their blocks differ)."""
    gen = generate(cm)
    sec = gen.section_of_path.get(path)
    if sec is None:
        return None
    line_blocks = list(sec.blocks)
    first = _first_path(gen, sec)
    if first is not None and first != path:  # another layer of the same class: its own modules and ops
        line_blocks = [tuple(_move(b, first, path) for b in blocks) for blocks in line_blocks]
        own = _instance_lines(gen, path)
        if own:
            line_blocks = _align(sec.lines, own, line_blocks)
    run = _run_layers(cm, path)
    if run and line_blocks:  # a stack of alike layers: its blocks are the layers, written by this class
        line_blocks[0] = tuple(line_blocks[0]) + tuple(f"m:{p}" for p in run)
    block_lines: dict[str, list[int]] = {}
    for i, blocks in enumerate(line_blocks):
        for b in blocks:
            block_lines.setdefault(b, []).append(i)
    return CodeView(path, sec.name, sec.text, line_blocks, block_lines)


def _run_layers(cm, path: str) -> list[str]:
    for stack in cm.semantics().stacks:
        for run in stack.runs:
            if stack.run_path(run) == path:
                return list(run)
    return []


def _instance_lines(gen: GeneratedModel, path: str) -> list[tuple[str, tuple]]:
    """(text, blocks) of the forward lines of the module call at `path`, written for that call."""
    from graphsurgeon.export.codegen.writer import FunctionWriter

    scope = next((s for s in gen.model.prog.root.scopes() if s.path == path and s.kind in ("module", "function")), None)
    if scope is None:
        return []
    body = FunctionWriter(gen.model.env, scope).write()
    return [(ln.text.strip(), ln.blocks) for ln in body.lines]  # compared without comments


def _align(lines: list[str], own: list[tuple[str, tuple]], blocks: list[tuple]) -> list[tuple]:
    """Give each line of the class text the blocks of the same line in one instance (in order)."""
    out, j, carry = list(blocks), 0, None
    for i, line in enumerate(lines):
        text = _squeeze(line.split("  # ")[0])
        for k in range(j, len(own)):
            mine = _squeeze(own[k][0])
            if mine == text or (text[-1:] in ("(", "[", "{") and len(text) > 8 and mine.startswith(text)):
                out[i], j = own[k][1], k + 1
                carry = own[k][1] if mine != text else None  # a statement the layout split: its other lines too
                break
        else:
            if carry is not None and not line.strip().startswith("#"):
                out[i] = carry
    return out


def _squeeze(text: str) -> str:
    """A line compared whatever its layout: no whitespace, double quotes."""
    return re.sub(r"\s+", "", text).replace("'", '"')


def _first_path(gen: GeneratedModel, sec: Section) -> str | None:
    for c in gen.model.classes:
        if c.name == sec.name:
            return c.path
    for f in gen.model.functions:
        if f.name == sec.name:
            return f.instances[0].path
    return None


def _move(block_id: str, old: str, new: str) -> str:
    """A block id of one layer seen in another layer of the same class (h.0.attn.c_attn -> h.1.attn.c_attn)."""
    kind, _, rest = block_id.partition(":")
    if kind == "m" and (rest == old or rest.startswith(old + ".")):
        return f"m:{new}{rest[len(old):]}"
    return block_id


def aten_calls(text: str) -> int:
    """How many `torch.ops.aten` calls a model.py has (the goal is none)."""
    return len(re.findall(r"torch\.ops\.aten\.", text))


def _head(cm, tied: dict, tensors: dict, loras: dict, kv_paths: list[str]) -> str:
    from graphsurgeon.export import hf_forward

    n = len(cm.loras)
    example = ", ".join(f"{k}={k}" for k in cm.input_names[:1])
    doc = f'''"""{cm.model_class} exported by graphsurgeon ({n} LoRA layer{"s" if n != 1 else ""}).

Plain PyTorch written from the captured graph; needs only torch and safetensors. One class per block kind,
torch.nn layers, the forward of each in torch.nn.functional and tensor methods with a shape comment per line.

    from model import load_model
    model = load_model(".")  # weights from model.safetensors
    out = model({example})  # any batch and sequence length; attention_mask etc. optional
    out[{cm.output_names[0]!r}]

Parameters keep their Hugging Face state-dict names; LoRA weights are `<target>.lora_A.weight` /
`<target>.lora_B.weight` (`<fused module>.<role>` for a slice of a fused projection such as GPT-2's c_attn.q).
"""'''
    causal = is_causal_lm(cm)
    consts = [
        f"INPUTS = {list(cm.input_names)!r}",
        f"OUTPUTS = {list(cm.output_names)!r}",
        _table("TIED", tied, "parameter -> the parameter it shares its tensor with (saved once)"),
        _table("LORAS", loras, "LoRA module path -> what it adapts and its hyper-parameters"),
        f"CAUSAL_LM = {causal!r}",
        *([f"KV_LAYERS = {kv_paths!r}  # the attention layers that keep a KV cache while generating"]
          if kv_paths else []),
        f"MLM = {cm.model_class.endswith('ForMaskedLM')!r}",
        f"LOSS = {hf_forward.constants(cm)['LOSS']!r}  # the loss Hugging Face computes from labels (hf_loss)",
        *([f"HIDDEN_LAYERS = {hf_forward.constants(cm)['HIDDEN_LAYERS']!r}  # whose inputs and outputs are "
           "hidden_states"] if "HIDDEN_LAYERS" in hf_forward.constants(cm) else []),
    ]
    imports = ("import json\nimport os\nfrom dataclasses import dataclass, fields\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
               f"{SAFETENSORS_IMPORT.format(file='model.py', names='load_file')}")
    return doc + "\n\n" + imports + "\n\n" + "\n".join(consts)


def _table(name: str, table: dict, what: str) -> str:
    """A module-level dict, one entry per line when there are several."""
    if len(table) <= 1:
        return f"{name} = {table!r}  # {what}"
    lines = [f"{name} = {{  # {what}"]
    for k, v in table.items():  # as ruff format writes it: double quotes, an entry over 119 characters split
        entry = f"    {_literal(k)}: {_literal(v)},"
        if len(entry) > 119 and isinstance(v, dict):
            parts = [f"        {_literal(a)}: {_literal(b)}," for a, b in v.items()]
            lines += [f"    {_literal(k)}: {{", *parts, "    },"]
        else:
            lines.append(entry)
    return "\n".join(lines + ["}"])


def _literal(v) -> str:
    """A Python literal of `v` with double-quoted strings."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_literal(a)}: {_literal(b)}" for a, b in v.items()) + "}"
    return repr(v)


def _lora_kinds_only(tail: str, kinds: set[str]) -> str:
    """The tail's `add_lora` with the branches of the LoRA kinds model.py has, only: a branch of another kind
    would name a class model.py does not define (an undefined name, even where it never runs)."""
    branch = re.compile(r'^        (?:if|elif) hp\["kind"\] == "(\w+)".*\n(?:^            .*\n)+', re.M)
    found = list(branch.finditer(tail))  # the template's branches, one after another
    kept = [m.group(0) for m in found if m.group(1) in kinds]
    if kept:
        kept[0] = kept[0].replace("        elif ", "        if ", 1)
    return tail[:found[0].start()] + "".join(kept) + tail[found[-1].end():]
