"""Every export runs its model.py against the captured graph before the folder is handed over (export/verify.py):
the check passes on what the code generator writes, and it can fail — a one-line edit of a freshly written model.py
(a rotary base, a head count, swapped operands, a name, a syntax error) is refused naming the module or the line,
nothing is left at --out, and the written folder is kept under the cache for a bug report."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import graphsurgeon.export as export
from graphsurgeon.capture import capture
from graphsurgeon.cli import main
from graphsurgeon.export import export_folder
from graphsurgeon.export.verify import SelfCheckError, undefined_names
from graphsurgeon.surgery import LoRAConfig, add_lora

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build, fresh, randomize  # noqa: E402
from test_export import load_exported  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def edit_model_py(monkeypatch, old: str, new: str, count: int = 1, always: bool = True) -> None:
    """Every export from now on writes model.py with the regex `old` replaced by `new` (a code generator's bug);
    always: `old` must be there."""
    write = export._write

    def edited(cm, folder, *final):
        write(cm, folder, *final)
        text, n = re.subn(old, new, (folder / "model.py").read_text(), count=count)
        assert n or not always, old
        (folder / "model.py").write_text(text)

    monkeypatch.setattr(export, "_write", edited)


def test_the_success_line_says_what_was_checked(tmp_path, cache):
    cm = fresh("gpt2")
    add_lora(cm, roles=("q", "v"), layers="0", config=LoRAConfig(r=4, alpha=8))
    result = export_folder(cm, tmp_path / "out")
    assert re.fullmatch(r"model\.py checked against the graph: 2 lengths, random LoRA, KV cache, max diff "
                        r"\de[-+]\d\d; sizes checked against Hugging Face at a second config \(vocab_size 101 → 112, "
                        r"n_embd 64 → 192, n_layer 2 → 3, n_head 4 → 8\): max diff \de[-+]\d\d", result.check), \
        result.check
    assert not (cache / "failed-exports").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary folder left beside it


@pytest.mark.parametrize("arch, old, new, module", [
    # the rotary base 10000 -> 10000 ** 1.1 (inv_freq = base ** (-2i/d)): only the rotary module differs
    ("llama", r"\* self\.inv_freq\.to\(torch\.float32\)  #", "* self.inv_freq.to(torch.float32) ** 1.1  #",
     "model.rotary_emb"),
    # 4 heads of 16 -> 2 heads of 32 in every projection's view: the same shapes outside the attention
    ("gpt2", r"-1, self\.head_dim\)\.transpose", "-1, self.head_dim * 2).transpose", "transformer.h.0.attn"),
    # cos and sin swapped where the rotary embedding is applied
    ("llama", r"= apply_rotary_pos_emb\((\w+), (\w+), cos, sin\)", r"= apply_rotary_pos_emb(\1, \2, sin, cos)",
     "model.layers.0.self_attn"),
])
def test_an_edited_model_py_is_refused_naming_the_module(arch, old, new, module, tmp_path, cache, monkeypatch):
    cm = fresh(arch)
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=2, alpha=4))
    edit_model_py(monkeypatch, old, new, count=3)
    with pytest.raises(SelfCheckError) as err:
        export_folder(cm, tmp_path / "out")
    text = str(err.value)
    assert f"differs from the captured graph from the module {module} " in text, text
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    kept = Path(re.search(r"kept for a bug report in (\S+)\.$", text).group(1))
    assert kept.parent == cache / "failed-exports" and re.search(old, (kept / "model.py").read_text()) is None
    assert (kept / "self-check" / "refusal.txt").is_file() and (kept / "self-check" / "inputs.safetensors").is_file()


def test_a_trained_lora_does_not_name_its_projection(tmp_path, cache, monkeypatch):
    """Exported with non-zero B (a trained LoRA): q_proj's output in model.py holds the update that the graph adds
    next to it, so the wrapped projection is not compared and the module that differs is named (before: q_proj,
    the first LoRA-wrapped module, whatever differed)."""
    cm = fresh("llama")
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=2, alpha=4))
    randomize(cm, seed=3)
    edit_model_py(monkeypatch, r"= apply_rotary_pos_emb\((\w+), (\w+), cos, sin\)",
                  r"= apply_rotary_pos_emb(\1, \2, sin, cos)", count=3)
    with pytest.raises(SelfCheckError) as err:
        export_folder(cm, tmp_path / "out")
    assert "differs from the captured graph from the module model.layers.0.self_attn " in str(err.value), err.value


def test_a_difference_only_a_random_lora_shows_is_found(tmp_path, cache, monkeypatch):
    """LoRA's scaling halved: invisible at B = 0, found with random non-zero LoRA weights."""
    cm = fresh("bert")
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=2, alpha=4))
    edit_model_py(monkeypatch, r"\* self\.scaling", "* self.scaling / 2")
    with pytest.raises(SelfCheckError, match=r"random non-zero LoRA"):
        export_folder(cm, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("old, new, message", [
    (r"torch\.rsqrt\(", "rsqrt(", "model.py reads the undefined name 'rsqrt' (line "),
    (r"        super\(\).__init__\(\)\n", "        super().__init__()\n        self.0 = nn.Linear(2, 2)\n",
     "model.py does not compile (invalid syntax"),
    (r"\* self\.inv_freq\.to\(torch\.float32\)  #", "* self.inv_freq.to(torch.float32)[None, None, :3]  #",
     "model.py fails when it is run on its own in the module model.layers.0.self_attn ("),
])
def test_a_model_py_that_cannot_run_is_refused(old, new, message, tmp_path, cache, monkeypatch):
    edit_model_py(monkeypatch, old, new)
    with pytest.raises(SelfCheckError) as err:
        export_folder(fresh("llama"), tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_the_cli_exits_2_with_one_sentence_and_nothing_at_out(tmp_path, cache, monkeypatch, capsys):
    edit_model_py(monkeypatch, r"-1, self\.head_dim\)\.transpose", "-1, self.head_dim * 2).transpose", count=3)
    out = tmp_path / "out"
    assert main(["lora", "tiny-gpt2", "--targets", "q,v", "--out", str(out), "--random-weights"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the export's self-check refused it: ") and err.count("\n") == 1
    assert "transformer.h.0.attn" in err and str(cache / "failed-exports") in err
    assert not out.exists()


def test_the_cli_prints_the_check(tmp_path, cache, capsys):
    assert main(["lora", "tiny-gpt2", "--targets", "q,v", "--out", str(tmp_path / "out"), "--random-weights"]) == 0
    assert "model.py checked against the graph: 2 lengths, random LoRA, KV cache, max diff " in capsys.readouterr().out


def test_a_kv_cache_that_differs_is_written_again_without_one(tmp_path, cache, monkeypatch):
    """The full forward is right, the cached path is not (new keys put before the cached ones): found by the tokens
    fed after cached ones, as generate() feeds them; model.py is written again without a cache, checked again, and
    the line and the README say why. Its generate() still writes HF's greedy tokens."""
    edit_model_py(monkeypatch, r"torch\.cat\(\[self\.key, key\], dim=2\)", "torch.cat([key, self.key], dim=2)",
                  always=False)  # the second model.py has no cache
    hf = build("llama")
    cm = fresh("llama")
    result = export_folder(cm, tmp_path / "out")
    assert re.search(r"generate\(\) keeps no KV cache: with one, the logits of tokens fed after cached ones differ "
                     r"from the graph's \(max diff \S+, tolerance \S+\)$", result.check), result.check
    assert ", KV cache," not in result.check and cm.kv_cache_off
    ours = load_exported(tmp_path / "out")
    assert "class KVCache" not in (tmp_path / "out" / "model.py").read_text()
    assert "use_cache" not in type(ours).forward.__code__.co_varnames and hasattr(ours, "generate")
    assert "without a KV cache (with one, the logits of tokens fed after cached ones differ" in \
        (tmp_path / "out" / "README.md").read_text()
    ids = torch.randint(3, 101, (2, 6), generator=torch.Generator().manual_seed(2))
    want = hf.generate(ids, max_new_tokens=5, do_sample=False)
    assert ours.generate(ids, max_new_tokens=5).tolist() == want.tolist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")] and not (cache / "failed-exports").exists()


def test_undefined_names_against_python_itself():
    """Names read at module, class and function level that nothing defines; closures, imports, builtins and
    later definitions are defined (ground truth: what running the code raises)."""
    code = ("import os\nfrom torch import nn\n\n"
            "def f(x):\n    y = len(x)\n    def g():\n        return y + z\n    return g\n\n"
            "class A(nn.Module):\n    k = os.sep\n    def m(self):\n        return B, missing_name\n\n"
            "class B:\n    pass\n")
    assert undefined_names(code) == [("z", 7), ("missing_name", 13)]
    assert undefined_names("x = 1\nprint(x, __file__)\n") == []


class _Attention(torch.nn.Module):
    def __init__(self, in_place: bool):
        super().__init__()
        self.q, self.k, self.v, self.o = (torch.nn.Linear(32, 32) for _ in range(4))
        self.in_place = in_place

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (m(x).view(b, t, 4, 8).transpose(1, 2) for m in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) / 8 ** 0.5
        if self.in_place:
            scores += torch.ones(t, t).triu(1) * -1e4  # captured as add_
        return self.o((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, 32))


class _Model(torch.nn.Module):
    """Two layers of attention and an MLP that is an nn.Sequential (children named 0, 1, 2) or one Linear."""

    def __init__(self, in_place: bool, sequential: bool):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 32)
        self.attn = torch.nn.ModuleList([_Attention(in_place) for _ in range(2)])
        self.ffn = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(),
                                                            torch.nn.Linear(64, 32)) if sequential
                                        else torch.nn.Linear(32, 32) for _ in range(2)])

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for attn, ffn in zip(self.attn, self.ffn):
            x = x + attn(x)
            x = x + ffn(x)
        return x


@pytest.mark.parametrize("in_place, sequential", [(True, False), (False, True)], ids=["add_", "nn.Sequential"])
def test_layouts_the_generator_may_not_know_are_never_exported_wrong(in_place, sequential, tmp_path, cache):
    """An export is refused in one sentence or its model.py computes what the module computes (the module itself
    is the oracle): never a folder that computes something else."""
    from graphsurgeon.capture import capture

    torch.manual_seed(0)
    module = _Model(in_place, sequential).eval()
    cm = capture(module, example_inputs={"input_ids": torch.randint(0, 50, (2, 10))},
                 dynamic={"input_ids": {0: "batch", 1: "seq"}})
    try:
        result = export_folder(cm, tmp_path / "out")
    except SelfCheckError as err:
        assert "\n" not in str(err) and not (tmp_path / "out").exists()
        return
    assert result.check.startswith("model.py checked against the graph: 2 lengths")
    ids = torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        got = load_exported(tmp_path / "out")(input_ids=ids)
        want = module(ids)
    got = got[0] if isinstance(got, (tuple, list)) else next(iter(got.values())) if hasattr(got, "values") else got
    assert (got - want).abs().max() <= 1e-5



# ---- model.py's sizes at a second config (export/second_config.py) ----------------------------------------------

def _model_py(folder: Path):
    """folder/model.py imported (its Config, load_model)."""
    spec = importlib.util.spec_from_file_location(f"second_{abs(hash(str(folder)))}", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _config_of(folder: Path, **changes) -> Path:
    """config.json of `folder` with `changes`, written beside it as second.json."""
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "second.json").write_text(json.dumps({**cfg, **changes}))
    return folder / "second.json"


def test_a_size_right_only_at_the_exported_config_gets_every_size_fixed(tmp_path, cache, monkeypatch):
    """A head size written as a number (`self.head_dim = 16`: the config's at the exported config, so the graph check
    passes) differs at the second config: the export writes model.py again with every size a literal and says why;
    its Config refuses a config.json of other sizes in a sentence, and model.py still loads at its own."""
    cm = fresh("gpt2")
    add_lora(cm, roles=("q", "v"), layers="0", config=LoRAConfig(r=4, alpha=8))
    edit_model_py(monkeypatch, r"self\.head_dim = config\.n_embd // config\.n_head", "self.head_dim = 16",
                  always=False)
    result = export_folder(cm, tmp_path / "out")
    assert re.search(r"; fixed at this config \(Config refuses others\): every size — at a second config \(.*n_embd "
                     r"64 → 192.*\) model\.py (differs from Hugging Face there|fails)", result.check), result.check
    text = (tmp_path / "out" / "model.py").read_text()
    assert "config.n_embd" not in text and "def __post_init__" in text
    mod = _model_py(tmp_path / "out")
    with pytest.raises(ValueError, match=r"model\.py's sizes are fixed at the exported config; this config sets "
                                         r"n_embd=96 \(model\.py: 64\)\. Export the model again"):
        mod.Config.from_json(str(_config_of(tmp_path / "out", n_embd=96)))
    mod.load_model(str(tmp_path / "out"))  # its own config.json: no complaint


def test_a_literal_layer_count_gets_the_layer_count_pinned(tmp_path, cache, monkeypatch):
    """A layer count written as a number builds a deeper config's first layers without a word (its extra weights go
    unread): the check sees Hugging Face's tensors model.py lacks, finds the same config at the model's own layer
    count equal, and pins only the layer count — the widths stay the config's."""
    cm = fresh("gpt2")
    edit_model_py(monkeypatch, r"range\(config\.n_layer\)", "range(2)", always=False)
    result = export_folder(cm, tmp_path / "out")
    assert re.search(r"sizes checked against Hugging Face at a second config \(vocab_size 101 → 112, n_embd 64 → "
                     r"192, n_head 4 → 8\): max diff .*; fixed at this config \(Config refuses others\): n_layer — "
                     r"at a second config \(.*n_layer 2 → 3.*\) Hugging Face's model has tensors model\.py has not "
                     r"\('transformer\.h\.2\.", result.check), result.check
    text = (tmp_path / "out" / "model.py").read_text()
    assert "config.n_embd" in text
    mod = _model_py(tmp_path / "out")
    assert mod.Config.from_json(str(_config_of(tmp_path / "out", n_embd=96))).n_embd == 96
    with pytest.raises(ValueError, match=r"this config sets n_layer=3 \(model\.py: 2\)"):
        mod.Config.from_json(str(_config_of(tmp_path / "out", n_layer=3)))


def test_deberta_silently_wrong_at_a_second_config_gets_every_size_fixed(tmp_path, cache):
    """DeBERTa's model.py once equalled HF at its config and differed by 2e-4 at a grown one (its head size kept as
    `torch.tensor(16.0)` in a helper): the check catches it on the codegen as it is, not on an edited file."""
    import model_zoo

    folder = model_zoo.save("deberta", tmp_path / "hf")
    result = export_folder(capture(str(folder)), tmp_path / "out")
    assert "(Config refuses others): every size — at a second config" in result.check, result.check
    mod = _model_py(tmp_path / "out")
    with pytest.raises(ValueError, match="hidden_size=96"):
        mod.Config.from_json(str(_config_of(tmp_path / "out", hidden_size=96)))
