"""model.py at run time, against the unmodified Hugging Face model: any dtype (HF's float32 upcasts kept from a
float32 capture), the fast attention path with and without padding, generation with a cache."""

from __future__ import annotations

import functools
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from graphsurgeon.export import export_folder

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build, fresh  # noqa: E402
from test_export import load_exported  # noqa: E402


@functools.lru_cache(maxsize=None)
def exported(arch: str) -> Path:
    """The tiny `arch` model exported once per session (float32 weights)."""
    folder = Path(tempfile.mkdtemp(prefix=f"gs-modelpy-{arch}-")) / "out"
    export_folder(fresh(arch), folder)
    return folder


def batch(padded: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    x = {"input_ids": torch.randint(0, 101, (3, 7), generator=gen)}
    if padded:  # left padding, as a batch for generation has it
        x["attention_mask"] = torch.ones(3, 7, dtype=torch.long)
        x["attention_mask"][0, :2] = 0
    return x


def logits(model, x: dict) -> torch.Tensor:
    """The first output at the positions that are not padding, in float32."""
    with torch.no_grad():
        out = model(**x)[0].float()
    keep = x.get("attention_mask", torch.ones_like(x["input_ids"])).bool()
    return out[keep]


@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_matches_hf_in_that_dtype(arch, dtype):
    """Exported from float32 weights, run in bf16 / fp16: model.py differs from HF in that dtype by no more than HF
    in that dtype differs from HF in float32."""
    x = batch(padded=True)
    reference = logits(build(arch), x)
    hf = logits(build(arch).to(dtype), x)
    ours = logits(load_exported(exported(arch)).to(dtype), x)
    drift = (hf - reference).abs().max().item()
    assert drift > 0  # the dtype did change the arithmetic
    assert (ours - hf).abs().max().item() <= drift  # gpt2 too: gelu_new stays its eight ops (no fused GELU)


def test_llama_keeps_hf_precision_choices():
    """RMSNorm's float32 statistics and rotary's cast back to the activations' dtype survive a float32 capture, and
    load_model(dtype=…) gives the same numbers as .to(dtype)."""
    folder = exported("llama")
    text = (folder / "model.py").read_text()
    assert "input_dtype = hidden_states.dtype" in text and ".to(torch.float32)" in text
    assert ".to(input_dtype)" in text
    x = batch(padded=False)
    converted = load_exported(folder).to(torch.bfloat16)
    direct = _module(folder).load_model(str(folder), dtype=torch.bfloat16).eval()
    assert next(direct.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        a, b = converted(**x)["logits"], direct(**x)["logits"]
    assert a.dtype == b.dtype == torch.bfloat16 and torch.equal(a, b)


def _module(folder: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"exported_dtype_{abs(hash(str(folder)))}", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class SDPACalls(torch.overrides.TorchFunctionMode):
    """Records the mask and is_causal of every F.scaled_dot_product_attention call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal", False), kwargs.get("enable_gqa")))
        return func(*args, **kwargs)


@pytest.mark.parametrize("arch,causal", [("gpt2", True), ("bert", False), ("llama", True)])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_fast_attention_path_matches_hf(arch, causal, padded):
    """No padding: SDPA gets no mask tensor (is_causal=True in a decoder); padding: a boolean mask. Equal to HF
    either way; Llama's grouped-query attention goes through SDPA's enable_gqa (no repeated keys)."""
    x = batch(padded)
    model = load_exported(exported(arch))
    with SDPACalls() as seen:
        ours = logits(model, x)
    assert (ours - logits(build(arch), x)).abs().max().item() < 1e-5
    assert seen.calls
    for mask, is_causal, gqa in seen.calls:
        if padded:
            assert mask is not None and mask.dtype == torch.bool and not is_causal
        else:
            assert mask is None and is_causal == causal
        assert gqa == (True if arch == "llama" else None)


def test_bloom_in_bf16_matches_hf_in_bf16(tmp_path):
    """Eager attention and ALiBi in half precision: Bloom's ALiBi built in the activations' dtype (a function with no
    floating input takes it from its caller, `build_alibi_tensor(attention_mask, num_heads, dtype)`) and the
    softmax's float32 cast back (`F.softmax(…, dtype=torch.float32).to(value_layer.dtype)`, one line that spells
    both dtypes): model.py in bf16 differs from HF in bf16 by no more than HF in bf16 differs from HF in float32 —
    it crashed before (`baddbmm` of a float32 ALiBi with bf16 queries)."""
    import model_zoo
    from graphsurgeon.capture import capture

    hf = model_zoo.build("bloom")
    export_folder(capture(hf), tmp_path / "out")
    text = (tmp_path / "out" / "model.py").read_text()
    assert "build_alibi_tensor(attention_mask, num_heads=self.num_heads, dtype=hidden_states.dtype)" in text
    x = batch(padded=True)
    reference = logits(hf, x)
    drift = (logits(hf.to(torch.bfloat16), x) - reference).abs().max().item()
    ours = logits(load_exported(tmp_path / "out").to(torch.bfloat16), x)
    assert drift > 0 and (ours - logits(hf, x)).abs().max().item() <= drift


@pytest.mark.parametrize("arch, cast", [("olmo2", r"\n    query_states = q_embed\.to\(input_dtype\)"),
                                         ("olmo", r"F\.layer_norm\(hidden_states\.to\(torch\.float32\), .*\)\.to\(\s*input_dtype\s*\)"),
                                         ("beam", r"self\.act_fn\(gate\.to\(torch\.float32\)\)")])
def test_olmo_in_bf16_matches_hf_in_bf16(tmp_path, arch, cast):
    """OLMo 2 keeps cos / sin in float32 and casts back inside apply_rotary_pos_emb (`q_embed.to(q_type)`), a plain
    function whose frame the capture loses: the cast is read from that function's source and kept. OLMo's LayerNorm
    makes both casts in one statement (`F.layer_norm(x.to(dtype=torch.float32), …).to(\n orig_dtype\n)`): each is
    read from its own call. Beam upcasts an activation's input in the call (`self.act_fn(gate.float())`): the cast is
    that call's argument. So model.py in bf16 differs from HF in bf16 by no more than HF in bf16 differs from HF in
    float32 — OLMo 2 and OLMo crashed before (float32 queries and keys, bf16 values; a float32 norm output into a
    bf16 Linear), Beam differed by 1.1× HF's drift (its SiLU ran in bf16)."""
    import model_zoo
    from graphsurgeon.capture import capture

    hf = model_zoo.build(arch, attn="sdpa")
    export_folder(capture(hf), tmp_path / "out")
    assert re.search(cast, (tmp_path / "out" / "model.py").read_text())
    x = batch(padded=True)
    reference = logits(hf, x)
    drift = (logits(hf.to(torch.bfloat16), x) - reference).abs().max().item()
    ours = logits(load_exported(tmp_path / "out").to(torch.bfloat16), x)
    assert drift > 0 and (ours - logits(hf, x)).abs().max().item() <= drift


@functools.lru_cache(maxsize=None)
def lively(arch: str):
    """A tiny `arch` model with larger weights (its greedy tokens vary instead of repeating one), and its export."""
    from graphsurgeon.capture import capture

    model = build(arch, initializer_range=0.5)
    folder = Path(tempfile.mkdtemp(prefix=f"gs-generate-{arch}-")) / "out"
    export_folder(capture(model), folder)
    return model, load_exported(folder)


@pytest.mark.parametrize("arch", ["gpt2", "opt", "bigcode", "llama"])
def test_greedy_generate_equals_hf(arch):
    """model.generate (KV cache) writes HF's greedy tokens, one prompt and a left-padded batch."""
    hf, ours = lively(arch)
    assert "use_cache" in type(ours).forward.__code__.co_varnames  # the self-check kept its cache
    ids = torch.randint(3, 101, (3, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :2] = mask[1, :1] = 0
    for x in ({"input_ids": ids[2:]}, {"input_ids": ids, "attention_mask": mask}):
        want = hf.generate(**x, max_new_tokens=12, do_sample=False)  # both with their eos / pad defaults
        got = ours.generate(**x, max_new_tokens=12)
        assert got.tolist() == want.tolist()
        assert len(set(got[:, 7:].flatten().tolist())) > 3  # varied tokens, not one repeated


def greedy_equals_hf(ours, hf) -> None:
    """model.py's greedy generate() writes HF's tokens for one prompt and a left-padded batch of 3 (10 new tokens)."""
    ids = torch.randint(3, 101, (3, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :2] = mask[1, :1] = 0
    for x in ({"input_ids": ids[2:]}, {"input_ids": ids, "attention_mask": mask}):
        want = hf.generate(**x, max_new_tokens=10, do_sample=False)
        got = ours.generate(**x, max_new_tokens=10)
        assert got.tolist() == want.tolist()
        assert len(set(got[:, 7:].flatten().tolist())) > 3  # varied tokens, not one repeated


@pytest.mark.parametrize("arch", ["bloom", "gpt2-eager"])
def test_generate_without_a_cache_equals_hf(arch):
    """A causal LM whose attention is not SDPA's (Bloom's baddbmm with ALiBi, GPT-2 captured with eager attention)
    has no KV cache in model.py, yet generates: the whole sequence read again per token, HF's greedy tokens for one
    prompt and a left-padded batch."""
    from graphsurgeon.capture import capture

    if arch == "bloom":
        import model_zoo

        torch.manual_seed(0)
        config = model_zoo.tiny_config("bloom")
        config.initializer_range = 0.5
        hf = model_zoo.model_class("bloom")(config).eval()
    else:
        hf = build("gpt2", initializer_range=0.5, attn_implementation="eager")
    folder = Path(tempfile.mkdtemp(prefix=f"gs-generate-{arch}-")) / "out"
    export_folder(capture(hf), folder)
    ours = load_exported(folder)
    assert "use_cache" not in type(ours).forward.__code__.co_varnames  # the path without a cache
    greedy_equals_hf(ours, hf)


def test_sliding_window_layers_generate_with_a_kv_cache():
    """Layers with a sliding-window mask (Qwen 2's sliding and full attention in turn, window 3 < the prompt) keep
    their KV cache: the mask, built over the whole sequence, gives the new tokens' rows, so the self-check passes
    with the cache (before, the sliding layer read the whole mask, the cached path failed and generate() ran
    without a cache) and greedy tokens equal HF's for one prompt and a left-padded batch."""
    import model_zoo

    from graphsurgeon.capture import capture

    torch.manual_seed(0)
    config = model_zoo.tiny_config("qwen2")
    config.layer_types = ["sliding_attention", "full_attention"]
    config.use_sliding_window, config.sliding_window = True, 3
    config.initializer_range = 0.5
    hf = model_zoo.model_class("qwen2")(config).eval()
    folder = Path(tempfile.mkdtemp(prefix="gs-generate-sliding-")) / "out"
    result = export_folder(capture(hf), folder)
    assert "KV cache" in result.check and "no KV cache" not in result.check, result.check
    ours = load_exported(folder)
    greedy_equals_hf(ours, hf)


def test_attention_reading_values_first_keeps_its_kv_cache():
    """NanoChat normalises q and k after v is made, so its attention function takes the values first: its sizes
    (batch, seq) are read from the queries, not from the values a KV cache makes longer (before: the cached path
    failed, `shape '[2, -1, 6, 16]' is invalid`, and generate() ran without a cache); greedy tokens equal HF's."""
    import model_zoo

    from graphsurgeon.capture import capture

    torch.manual_seed(0)
    config = model_zoo.tiny_config("nanochat")
    config.initializer_range = 0.5
    hf = model_zoo.model_class("nanochat")(config).eval()
    folder = Path(tempfile.mkdtemp(prefix="gs-generate-nanochat-")) / "out"
    result = export_folder(capture(hf), folder)
    assert "KV cache" in result.check and "no KV cache" not in result.check, result.check
    greedy_equals_hf(load_exported(folder), hf)


def test_cache_and_eos(tmp_path):
    """The forward with past_key_values gives the logits of the full sequence; a row that writes the eos token goes
    on with the pad token as HF's generate does."""
    hf, ours = lively("llama")
    ids = torch.randint(3, 101, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = ours(input_ids=ids)["logits"]
        first = ours(input_ids=ids[:, :6], use_cache=True)
        rest = ours(input_ids=ids[:, 6:], past_key_values=first["past_key_values"], use_cache=True)
    assert len(first["past_key_values"]) == 2 and first["past_key_values"][0][0].shape[2] == 6
    # 3 new tokens after 6 cached: a mask is built (padding-free chunks of several tokens need one)
    assert (rest["logits"][:, -1] - full[:, -1]).abs().max().item() < 1e-4
    greedy = ours.generate(ids, max_new_tokens=6)
    eos = int(greedy[0, 11])  # the third new token of the first row
    want = hf.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=0)
    assert ours.generate(ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0).tolist() == want.tolist()
    # none given: the folder's eos / pad, as HF's generate() takes its generation_config's (config.json's without one)
    assert ours.generation_config == {"eos_token_id": hf.generation_config.eos_token_id,
                                      "pad_token_id": hf.generation_config.pad_token_id}
    folder = Path(shutil.copytree(Path(type(ours).forward.__code__.co_filename).parent, tmp_path / "out"))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "pad_token_id": 0}))
    assert load_exported(folder).generate(ids, max_new_tokens=6).tolist() == want.tolist()


def hf_pair(arch: str):
    """The tiny HF model and model.py's, exported once per session: the causal LMs with lively weights (the
    generate tests' models), the encoders as the suite builds them."""
    if arch in ("gpt2", "opt", "bigcode", "llama"):
        return lively(arch)
    return build(arch), load_exported(exported(arch))


def close(ours, theirs, keep: torch.Tensor, relative: bool = False) -> bool:
    """Equal at 1e-5 at the positions that are not padding ([batch, seq, …]), or everywhere (pooler_output);
    `relative`: 1e-5 of the largest value (a sum HF associates otherwise)."""
    if ours.shape != theirs.shape:
        return False
    if ours.dim() >= 2 and ours.shape[:2] == keep.shape:
        ours, theirs = ours[keep.bool()], theirs[keep.bool()]
    scale = max(1.0, theirs.abs().max().item()) if relative else 1.0
    return (ours.float() - theirs.float()).abs().max().item() < 1e-5 * scale


# per arch: the extra inputs HF's forward takes that model.py must take too (position_ids where HF has it,
# GPT-2's token_type_ids)
FORWARD_INPUTS = {"gpt2": ("position_ids", "token_type_ids"), "bigcode": ("position_ids", "token_type_ids"),
                  "opt": ("position_ids",), "llama": ("position_ids",), "bert": ("position_ids", "token_type_ids"),
                  "roberta": ("position_ids", "token_type_ids"), "distilbert": ()}


@pytest.mark.parametrize("arch", list(FORWARD_INPUTS))
def test_forward_inputs_and_outputs_equal_hf(arch):
    """model.py's forward takes HF's inputs_embeds, output_hidden_states, position_ids and GPT-2's token_type_ids,
    and returns HF's outputs (logits or last_hidden_state and pooler_output, hidden_states when asked) under HF's
    names and in its order, equal at 1e-5."""
    hf, ours = hf_pair(arch)
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 101, (2, 7), generator=gen)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :2] = 0
    embeds = hf.get_input_embeddings()(ids).detach()
    extra = {"position_ids": torch.arange(3, 10)[None].expand(2, -1),
             "token_type_ids": torch.randint(0, 2, (2, 7), generator=gen)}
    cases = [dict(input_ids=ids, attention_mask=mask, output_hidden_states=True),
             dict(inputs_embeds=embeds, attention_mask=mask),
             dict(inputs_embeds=embeds, output_hidden_states=True)]
    cases += [dict(input_ids=ids, attention_mask=mask, **{name: extra[name]}) for name in FORWARD_INPUTS[arch]]
    for x in cases:
        with torch.no_grad():
            want, got = hf(**x, use_cache=False) if arch in ("gpt2", "opt", "bigcode", "llama") else hf(**x), ours(**x)
        keep = x.get("attention_mask", torch.ones(2, 7))
        names = [k for k, v in want.items() if v is not None]
        assert list(got) == names, (arch, sorted(x))
        for name in names:
            if name == "hidden_states":
                assert len(got[name]) == len(want[name]) == hf.config.num_hidden_layers + 1
                assert all(close(a, b, keep) for a, b in zip(got[name], want[name])), (arch, sorted(x))
            else:  # GPT-2's token types: model.py adds them to the embeddings before the positions, HF after
                relative = "token_type_ids" in x and arch in ("gpt2", "bigcode")
                assert close(got[name], want[name], keep, relative), (arch, name, sorted(x))
