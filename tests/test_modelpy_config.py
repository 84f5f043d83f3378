"""model.py builds from its config: a config dataclass read from config.json, `__init__(self, config)` in every
class, sizes as expressions of the config. Checked the way a user would change it: model.py built at a second config
(other hidden size, heads, head_dim, layers) equals the Hugging Face model at that config with the same weights, and
no class body holds a literal equal to a config size (but where the Hugging Face class's own source has it)."""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import json
import re
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora, lora_weights

sys.path.insert(0, str(Path(__file__).parent))
import model_zoo  # noqa: E402
from surgery_models import build, randomize, with_delta  # noqa: E402
from test_modelpy_runtime import exported as runtime_exported  # noqa: E402  (one export per arch per session)

# the second config of each architecture: every size the first has, moved (head_dim too, so a head_dim written as a
# number or as hidden // heads the wrong way round shows)
SECOND = {
    "gpt2": dict(n_embd=96, n_head=3, n_layer=3, n_positions=80, vocab_size=117),
    "bert": dict(hidden_size=96, num_attention_heads=3, num_hidden_layers=3, intermediate_size=160,
                 max_position_embeddings=80, vocab_size=117),
    "distilbert": dict(dim=96, n_heads=3, n_layers=3, hidden_dim=160, max_position_embeddings=80, vocab_size=117),
    "opt": dict(hidden_size=96, num_attention_heads=3, num_hidden_layers=3, ffn_dim=160, word_embed_proj_dim=96,
                max_position_embeddings=80, vocab_size=117),
    # head_dim apart from hidden / heads (6 × 24 ≠ 96): q_proj's rows are heads × head_dim, not hidden
    "llama": dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=3, head_dim=24, num_hidden_layers=3,
                  intermediate_size=160, vocab_size=117),
    "bigcode": dict(n_embd=96, n_head=12, n_layer=3, n_positions=80, vocab_size=117),
    "gpt_neox": dict(hidden_size=96, num_attention_heads=3, num_hidden_layers=3, intermediate_size=160,
                     max_position_embeddings=80, vocab_size=117),
}
ARCHS = list(SECOND)
# the non-persistent buffers model.py computes from its config (init_buffers), as HF's __init__ does
COMPUTED = {"bert": ["embeddings.position_ids"], "distilbert": ["embeddings.position_ids"],
            "llama": ["model.rotary_emb.inv_freq"],
            "gpt_neox": ["gpt_neox.rotary_emb.inv_freq"]}


def hf_model(arch: str, **overrides) -> torch.nn.Module:
    """The suite's tiny model of `arch` (tests/surgery_models.py; GPT-NeoX, the fused-interleaved type, from
    tests/model_zoo.py), at its config with `overrides`."""
    if arch != "gpt_neox":
        return build(arch, **overrides)
    torch.manual_seed(0)
    cfg = model_zoo.tiny_config(arch)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return tf.GPTNeoXForCausalLM(cfg).eval()


@functools.lru_cache(maxsize=None)
def exported(arch: str) -> Path:
    if arch != "gpt_neox":  # the same tiny model test_modelpy_runtime exports: shared
        return runtime_exported(arch)
    folder = Path(tempfile.mkdtemp(prefix=f"gs-config-{arch}-")) / "out"
    export_folder(capture(hf_model(arch)), folder)
    return folder


def module_of(folder: Path):
    spec = importlib.util.spec_from_file_location(f"exported_config_{abs(hash(str(folder)))}", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def inputs(seed: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = {"input_ids": torch.randint(0, 101, (2, 9), generator=gen), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    x["attention_mask"][0, :3] = 0
    return x


def at_second_config(folder, changes: dict, tmp_path):
    """model.py beside its config.json with `changes`, in a folder of its own: (that folder, model.py imported)."""
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(folder / "model.py", second / "model.py")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (second / "config.json").write_text(json.dumps(cfg))
    return second, module_of(second)


@pytest.mark.parametrize("arch", ARCHS)
def test_second_config_equals_hf_at_that_config(arch, tmp_path):
    """config.json changed beside model.py (hidden, heads, head_dim, layers, vocab): model.py's model, random init
    then HF's state dict loaded, equals HF at that config; the config dataclass read every changed field it has."""
    folder = exported(arch)
    second, mod = at_second_config(folder, SECOND[arch], tmp_path)
    config = mod.Config.from_json(str(second / "config.json"))
    fields = {f for f in vars(config)}
    assert {k for k in SECOND[arch] if k in fields}, "the dataclass reads none of the sizes"
    for k in fields & set(SECOND[arch]):
        assert getattr(config, k) == SECOND[arch][k]
    torch.manual_seed(1)
    ours = mod.Model(config).eval()
    hf = hf_model(arch, **SECOND[arch])
    # HF's state dict and nothing else: the non-persistent buffers (rotary's inv_freq, BERT's position_ids) model.py
    # computes in __init__ from the config, as HF does — equal to HF's at this config, and not in model.safetensors
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    theirs = dict(hf.named_buffers())
    computed = {k for k in dict(ours.named_buffers()) if k not in ours.state_dict()}
    assert computed == set(COMPUTED.get(arch, ())), computed
    for k in computed:
        assert torch.equal(dict(ours.named_buffers())[k], theirs[k]), k
    assert not computed & set(load_file(str(folder / "model.safetensors")))
    x = inputs()
    keep = x["attention_mask"].bool()
    with torch.no_grad():
        want = hf(**x)[0]
        got = ours(**x)[0]
    assert got.shape == want.shape
    assert (got[keep] - want[keep]).abs().max().item() < 1e-5


ROPES = {  # rope_parameters of a tiny Llama: each type HF's modeling_rope_utils knows that model.py computes, and yarn
    "default": {},
    "linear": {"factor": 4.0},
    "dynamic": {"factor": 2.0},
    "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 16},
}


@pytest.mark.parametrize("rope", ROPES)
def test_rotary_inv_freq_is_computed_as_hf_computes_it(rope):
    """The rope types model.py writes (default, linear, dynamic's start, llama3) give HF's inv_freq at the config and
    at a second one (head_dim moved); a type it has no recipe for (yarn) stays in model.safetensors, saying why."""
    from types import SimpleNamespace

    from graphsurgeon.export.codegen.buffers import Buffers, _run
    from graphsurgeon.export.codegen.config import ConfigSizes

    params = {"rope_theta": 500.0, "rope_type": rope, **ROPES[rope]}
    cfg = tf.LlamaConfig(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, vocab_size=101, max_position_embeddings=64, rope_parameters=params)
    inv_freq = tf.models.llama.modeling_llama.LlamaRotaryEmbedding(cfg).inv_freq
    cm = SimpleNamespace(model_class="LlamaForCausalLM", config=cfg.to_dict())
    sizes = ConfigSizes(cm)
    name = "model.rotary_emb.inv_freq"
    found = Buffers(cm, sizes, {name: inv_freq}, {name})
    if rope == "yarn":
        assert name not in found.computed and "rope type 'yarn'" in found.kept[name]
        return
    lines = found.computed[name]
    assert lines[0] == 'base = config.rope_parameters["rope_theta"]' and lines[1] == "dim = config.head_dim"
    assert torch.equal(_run(lines, "inv_freq", cm.config), inv_freq)
    assert sizes.used["rope_parameters"] == cfg.rope_parameters
    other = tf.LlamaConfig(**{**cm.config, "head_dim": 32})
    want = tf.models.llama.modeling_llama.LlamaRotaryEmbedding(other).inv_freq
    assert torch.equal(_run(lines, "inv_freq", other.to_dict()), want)


# fused q/k/v layouts with LoRA on q and v (the update reshaped to the slice it is added to), at a second config:
# Falcon's grouped [kv, heads/kv + 2, head_dim] (its fused weight (heads + 2·kv)·head_dim rows), GPT-NeoX's
# interleaved [heads, 3·head_dim], GPTBigCode's multi-query [hidden + 2·head_dim]
FUSED = {
    "falcon": dict(hidden_size=96, num_attention_heads=6, num_kv_heads=3, num_hidden_layers=3, ffn_hidden_size=160,
                   vocab_size=117),
    "gpt_neox": dict(hidden_size=96, num_attention_heads=3, num_hidden_layers=3, intermediate_size=160,
                     vocab_size=117),
    "gpt_bigcode": dict(n_embd=96, n_head=12, n_layer=3, vocab_size=117),
    # Bloom's fused [heads, 3, head_dim], and its ALiBi: 6 heads, not a power of 2 (the slopes' second series)
    "bloom": dict(hidden_size=96, n_head=6, n_layer=3, vocab_size=117),
}


def fused_model(model_type: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = model_zoo.tiny_config(model_type)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return model_zoo.model_class(model_type)(cfg).eval()


def with_lora(model: torch.nn.Module):
    cm = capture(model)
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=8, alpha=16))
    return cm


@functools.lru_cache(maxsize=None)
def fused_exported(model_type: str) -> Path:
    cm = with_lora(fused_model(model_type))
    randomize(cm)
    folder = Path(tempfile.mkdtemp(prefix=f"gs-config-{model_type}-")) / "out"
    export_folder(cm, folder)
    return folder


def test_a_lora_inside_a_line_leaves_its_names_where_hf_puts_them():
    """A LoRA on one of Bloom's fused slices inside `query_layer = fused_qkv[..., 0, :].transpose(1, 2)` (the line
    goes on after the slice): the line's results keep HF's names in order — they were shifted by one (`key_layer =
    query_layer.transpose(1, 2)`) when the adapted slice counted as a result of the line."""
    code = (fused_exported("bloom") / "model.py").read_text()
    first: dict[str, str] = {}
    for m in re.finditer(r"^ +(query_layer|key_layer|value_layer) = (.*)$", code, re.M):
        first.setdefault(m[1], m[2])
    assert first["query_layer"].startswith("query.transpose(1, 2)"), first
    assert first["key_layer"].startswith("view[:, :, :, 1].transpose(1, 2)"), first
    assert first["value_layer"].startswith("value.transpose(1, 2)"), first


@pytest.mark.parametrize("model_type", FUSED)
def test_fused_lora_layouts_at_a_second_config(model_type, tmp_path):
    """model.py of a fused q/k/v projection with LoRA q, v, built at a second config (hidden, heads, key/value
    heads, layers moved): with B zero it equals the Hugging Face model at that config; with random non-zero A, B it
    equals that model whose fused weight got B·A·scaling on the q and v rows (the rows as the second config lays
    them out)."""
    folder = fused_exported(model_type)
    second, mod = at_second_config(folder, FUSED[model_type], tmp_path)
    torch.manual_seed(1)
    ours = mod.Model(mod.Config.from_json(str(second / "config.json"))).eval()
    hf = fused_model(model_type, **FUSED[model_type])
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not unexpected and missing and all(".lora_" in k for k in missing), (missing, unexpected)
    cm = with_lora(fused_model(model_type, **FUSED[model_type]))  # where q and v sit in the second config's rows
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for path, block in cm.loras.items():  # "….self_attention.lora_q" is model.py's "….query_key_value.q"
            a, b = lora_weights(cm, path)
            mine = ours.get_submodule(f"{block.target.module}.{path.rpartition('.lora_')[2]}")
            for theirs, own in ((a, mine.lora_A), (b, mine.lora_B)):
                own.weight.copy_(torch.randn(own.weight.shape, generator=gen) * 0.2)
                theirs.weight.copy_(own.weight)
    x = inputs()
    keep = x["attention_mask"].bool()
    with torch.no_grad():
        base = hf(**x)[0]
        bs = {k: v.clone() for k, v in ours.state_dict().items() if ".lora_B." in k}
        for k in bs:
            ours.get_parameter(k).zero_()
        assert (ours(**x)[0][keep] - base[keep]).abs().max().item() < 1e-5  # no update: HF at that config
        for k, v in bs.items():
            ours.get_parameter(k).copy_(v)
        want = with_delta(hf, cm)(**x)[0]  # (in place)
        got = ours(**x)[0]
    assert (want[keep] - base[keep]).abs().max().item() > 1e-3  # the update is real
    assert (got[keep] - want[keep]).abs().max().item() < 1e-5


# Gemma 2's layers alternate sliding-window and full attention (config.layer_types); its window cut short (3) so the
# two masks differ on the test's 9 tokens. The second config: 4 layers, head_dim apart from hidden / heads (its eager
# attention helper still spells the head counts: they stay)
KINDS_SECOND = dict(hidden_size=96, head_dim=8, num_hidden_layers=4, intermediate_size=160, vocab_size=117,
                    layer_types=["sliding_attention", "full_attention"] * 2)


def gemma2(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = model_zoo.tiny_config("gemma2")
    for k, v in {"sliding_window": 3, **overrides}.items():
        setattr(cfg, k, v)
    return tf.Gemma2ForCausalLM(cfg).eval()


def test_layers_of_two_kinds_loop_and_build_at_a_second_config(tmp_path):
    """Layers that read a mask by their kind are one loop over the whole list, as HF writes it (`causal_mask_mapping
    [layer_type]`), so the layer count comes from the config: model.py at 4 layers (2 captured) with other sizes
    equals HF at that config. Before, the count came from the config while the forward called layers[0] and
    layers[1] by hand (a second config ran 2 of its 4 layers), or every size stayed a literal (a config with
    layer_types could not be probed)."""
    folder = tmp_path / "out"
    result = export_folder(capture(gemma2()), folder)
    # its eager attention helper spells the head counts: the export's check at a second config (heads ×2) pins them,
    # and only them (export/second_config.py)
    assert "; fixed at this config (Config refuses others): num_attention_heads, num_key_value_heads — at a second " \
        "config" in result.check, result.check
    code = (folder / "model.py").read_text()
    assert "for layer, layer_type in zip(self.layers, self.layer_types):" in code
    assert "causal_mask_mapping[layer_type]" in code
    assert "for _ in range(config.num_hidden_layers)" in code
    second, mod = at_second_config(folder, KINDS_SECOND, tmp_path)
    with pytest.raises(ValueError, match=r"this config sets num_attention_heads=8 \(model\.py: 4\)"):
        mod.Config(num_attention_heads=8)
    ours = mod.Model(mod.Config.from_json(str(second / "config.json"))).eval()
    hf = gemma2(**KINDS_SECOND)
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    computed = {k for k in dict(ours.named_buffers()) if k not in ours.state_dict()}
    assert computed == {"model.embed_tokens.embed_scale", "model.rotary_emb.inv_freq"}  # from the config, as HF
    x = inputs()
    keep = x["attention_mask"].bool()
    with torch.no_grad():
        want, got = hf(**x)[0], ours(**x)[0]
    assert (got[keep] - want[keep]).abs().max().item() < 1e-5


# (the tiny model's config changes, the second config's): Mixtral's experts and experts per token (the router's
# weight rows, the experts' stacked weights, topk), OLMo's LayerNorm without weights (its normalized_shape) and
# the roots of a head size: Megatron-BERT's `scores / math.sqrt(self.attention_head_size)` (at the tiny config
# √16 = 4 heads: the number is not the head count), Nyströmformer's root of that root, OpenAI GPT's
# `w / math.sqrt(v.size(-1))` and `x.size(-1) // self.n_head` (its layers share one activation module: one loop)
MORE = {
    "megatron-bert": ({}, dict(hidden_size=96, num_hidden_layers=3, intermediate_size=160)),
    "nystromformer": ({}, dict(hidden_size=96, num_hidden_layers=3, intermediate_size=160)),
    "openai-gpt": ({}, dict(n_embd=96, n_layer=3)),
    # ALBERT: one shared layer called once per layer (`for _ in range(self.num_hidden_layers)`), an embedding size
    # equal to the hidden size at the tiny config but a size of its own
    "albert": ({}, dict(hidden_size=96, embedding_size=48, num_hidden_layers=3, intermediate_size=160)),
    # StableLM: its rotary dims and heads both 4 at the tiny config (6 and 4 at the second)
    "stablelm": ({}, dict(hidden_size=96, num_hidden_layers=3, intermediate_size=160)),
    # MiniCPM 5 MoE: dense and sparse layers, two classes, each layer's named by `mlp_layer_types` (one loop; the
    # second config has another pattern)
    "minicpm5_moe": (dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32),
                     dict(num_hidden_layers=4, mlp_layer_types=["dense", "sparse", "sparse", "dense"], hidden_size=96,
                          intermediate_size=160, n_routed_experts=6)),
    "mixtral": (dict(num_local_experts=5, num_experts_per_tok=3),
                dict(hidden_size=96, num_hidden_layers=3, num_local_experts=7, num_experts_per_tok=4,
                     intermediate_size=160)),
    "olmo": ({}, dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=6, num_hidden_layers=3,
                      intermediate_size=160)),
}


@pytest.mark.parametrize("model_type", MORE)
def test_sizes_the_forward_reads_at_a_second_config(model_type, tmp_path):
    """The sizes the forward reads from the config too: Mixtral at other expert counts, OLMo at another hidden size
    (its LayerNorm without weights reads the size from its input), Megatron-BERT at another head size, equal to HF
    at that config."""
    first, changes = MORE[model_type]
    folder = tmp_path / "out"
    export_folder(capture(fused_model(model_type, **first)), folder)
    second, mod = at_second_config(folder, changes, tmp_path)
    ours = mod.Model(mod.Config.from_json(str(second / "config.json"))).eval()
    hf = fused_model(model_type, **{**first, **changes})
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    theirs = dict(hf.named_buffers())
    for k in [k for k in missing if k in theirs and not k.endswith("inv_freq")]:  # a buffer model.py reads from
        ours.get_buffer(k).copy_(theirs[k])  # the weights file (OpenAI GPT's causal `bias`): HF's, as the file has it
        missing.remove(k)
    assert not unexpected and all(k.endswith("inv_freq") for k in missing), (missing, unexpected)
    loop = {"openai-gpt": "range(config.n_layer)", "albert": "for _ in range(self.num_hidden_layers):",
            "minicpm5_moe": "[kind](config)\n                for kind in config.mlp_layer_types\n"}
    assert loop.get(model_type, "") in (second / "model.py").read_text()
    x = inputs()
    keep = x["attention_mask"].bool()
    with torch.no_grad():
        want, got = hf(**x)[0], ours(**x)[0]
    assert (got[keep] - want[keep]).abs().max().item() < 1e-5


TEMPLATES = Path(__file__).parent.parent / "graphsurgeon" / "export" / "templates"
# the helpers model.py copies from its templates (hand-written, the same at every config): not scanned
HELPERS = {n.name for f in TEMPLATES.glob("*.py") for n in ast.parse(f.read_text()).body
           if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def hf_source(name: str, model: torch.nn.Module) -> str:
    """The Hugging Face source of what model.py's class or function `name` writes: the class of that name in the
    model, else the function of that name in its modeling module or a method of that name of one of its classes."""
    classes = {type(m).__name__: type(m) for m in model.modules()}
    if name in classes:
        return inspect.getsource(classes[name])
    found = getattr(sys.modules[type(model).__module__], name, None)
    if found is None:
        found = next((getattr(c, name) for c in classes.values() if callable(getattr(c, name, None))), None)
    return inspect.getsource(found) if inspect.isfunction(found) else ""


@pytest.mark.parametrize("arch", ARCHS + [f"{t}+lora" for t in FUSED])
def test_no_class_literal_equals_a_config_size(arch):
    """An AST scan of every class model.py writes for a module, its forward included (with LoRA q, v for the fused
    q/k/v layouts: the update's reshape), and of every module-level function it writes (build_alibi_tensor,
    apply_rotary_pos_emb; not the helpers it copies from its templates): no number equal to one of the config's
    sizes (the fields a second config moves, and floats such as eps and dropout rates), unless the Hugging Face class
    or function of that name has that number in its own source (OPT's position offset 2). Numbers 0, 1, 2 are dims
    and indices everywhere and are not scanned; nor is the factor of a config expression (`4 * config.n_embd`)."""
    lora = arch.endswith("+lora")
    arch = arch.removesuffix("+lora")
    folder = fused_exported(arch) if lora else exported(arch)
    cfg = json.loads((folder / "config.json").read_text())
    sizes = {v for k, v in cfg.items() if isinstance(v, int) and not isinstance(v, bool) and v > 2
             and not k.endswith("_token_id")}
    rates = {v for v in cfg.values() if isinstance(v, float) and 0 < v < 1}
    tree = ast.parse((folder / "model.py").read_text())
    model = fused_model(arch) if lora else hf_model(arch)
    hf_classes = {type(m).__name__ for m in model.modules()}
    written = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in hf_classes
               or isinstance(n, ast.FunctionDef) and n.name not in HELPERS]
    assert any(isinstance(n, ast.FunctionDef) for n in written) or arch in ("gpt2", "distilbert", "bert", "opt"), \
        "no module-level function scanned"
    found = []
    for cls in written:
        own = {n.value for n in ast.walk(ast.parse(textwrap.dedent(hf_source(cls.name, model))))
               if isinstance(n, ast.Constant)}  # the numbers HF's class or function writes itself
        scaled = {id(c) for op in ast.walk(cls) if isinstance(op, ast.BinOp) and "config." in ast.unparse(op)
                  for c in (op.left, op.right)}  # `4 * config.n_embd`: a multiple of a config size
        for node in ast.walk(cls):
            if id(node) in scaled:
                continue
            if not isinstance(node, ast.Constant) or isinstance(node.value, bool) \
                    or not isinstance(node.value, (int, float)):
                continue
            v = node.value
            if (v in sizes if isinstance(v, int) else v in rates) and v not in own:
                found.append(f"{cls.name}: {ast.unparse(node)} (line {node.lineno})")
    assert not found, found


def test_alibi_slopes_helper_equals_hf_at_every_head_count():
    """model.py's `_get_alibi_slopes` (templates/model_layers.py, what the trace's constant slopes become) gives
    Hugging Face's slopes bit for bit at 1–64 heads: powers of 2 and the heads beyond one (a second series)."""
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    names = {"torch": torch, "nn": torch.nn}
    exec((TEMPLATES / "model_layers.py").read_text(), names)
    cpu = torch.device("cpu")
    for n in range(1, 65):
        assert torch.equal(names["_get_alibi_slopes"](n, cpu), _get_alibi_slopes(n, cpu)), n
