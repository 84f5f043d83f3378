"""Capture constraints: a range torch.export refuses is retried with the one it suggests (and the note says so);
a failure no range can fix names the model's source line and why, with a hint only where one applies."""

import pytest
import torch
import transformers

from graphsurgeon.capture import capture
from graphsurgeon.capture.ranges import Ranges, suggested_ranges
from graphsurgeon.errors import CaptureError

TABLE = 16  # the position table holds fewer rows than the config's max_position_embeddings (64)


class GuardedConfig(transformers.PretrainedConfig):
    model_type = "guarded-test"

    def __init__(self, vocab_size=50, hidden_size=8, max_position_embeddings=64, **kw):
        super().__init__(**kw)
        self.vocab_size, self.hidden_size, self.max_position_embeddings = vocab_size, hidden_size, max_position_embeddings


class GuardedModel(torch.nn.Module):
    """HF-style: a config, input_ids / attention_mask, and an embedding that guards the sequence length."""

    def __init__(self, kind: str = "max"):
        super().__init__()
        self.config, self.kind = GuardedConfig(), kind
        self.wte = torch.nn.Embedding(50, 8)
        self.wpe = torch.nn.Embedding(TABLE, 8)
        self.head = torch.nn.Linear(8, 50)

    def forward(self, input_ids, attention_mask=None):
        seq = input_ids.shape[1]
        if seq > self.wpe.num_embeddings:  # as HF's position tables check the length
            raise ValueError(f"sequence length {seq} exceeds the position table")
        if self.kind == "min" and seq < 4:
            raise ValueError("too short")
        if self.kind == "unproven" and seq * min(64, 64 * seq) != 64 * seq:  # true, but torch.export cannot prove it
            raise ValueError("unreachable")
        if self.kind == "data" and input_ids.sum() > 3:  # data-dependent control flow
            return {"logits": self.head(self.wte(input_ids))}
        h = self.wte(input_ids) + self.wpe(torch.arange(seq))
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return {"logits": self.head(h)}


@pytest.fixture(scope="module")
def guarded():
    torch.manual_seed(0)
    model = GuardedModel("min").eval()
    return model, capture(model)


def test_refused_range_is_retried_with_the_suggested_one(guarded):
    model, cm = guarded
    assert cm.dims.bounds["seq"] == TABLE and cm.dims.lows["seq"] == 4
    note = next(n for n in cm.notes if "torch.export refused" in n)
    assert "seq ≤ 64 (the model's position limit)" in note
    assert f"4 ≤ seq ≤ {TABLE}" in note and "the range torch.export suggested" in note
    ids = torch.randint(0, 50, (3, TABLE))
    with torch.no_grad():
        assert torch.equal(cm.run(input_ids=ids)["logits"], model(ids)["logits"])


def test_suggested_fixes_are_read():
    text = "Suggested fixes:\n  seq = Dim('seq', min=4, max=64)\n  batch = Dim('batch', max=8)\n"
    assert suggested_ranges(text) == {"seq": (4, 64), "batch": (None, 8)}
    ranges = Ranges({"input_ids": {0: "batch", 1: "seq"}}, 64)
    assert ranges.suggest(text) and ranges.now == {"batch": (1, 8), "seq": (4, 64)}
    assert not ranges.suggest(text)  # a suggestion already tried is not tried again
    assert ranges.notes() == ["torch.export refused batch ≤ 4096; captured with batch ≤ 8, the range torch.export "
                              "suggested", "torch.export refused seq ≤ 64 (the model's position limit); captured "
                              "with 4 ≤ seq ≤ 64, the range torch.export suggested"]


def test_a_guard_torch_export_cannot_prove_is_checked_at_run_time():
    torch.manual_seed(0)
    model = GuardedModel("unproven").eval()
    cm = capture(model)
    assert any("could not prove the guard" in n and "checked when the graph runs" in n for n in cm.notes)
    ids = torch.randint(0, 50, (3, 13))
    with torch.no_grad():
        assert torch.equal(cm.run(input_ids=ids)["logits"], model(ids)["logits"])


def test_data_dependent_failure_names_the_line_without_a_useless_hint():
    with pytest.raises(CaptureError) as info:
        capture(GuardedModel("data").eval())
    msg = str(info.value)
    assert "test_capture_ranges.py:" in msg and "input_ids.sum() > 3" in msg
    assert "data-dependent control flow" in msg
    assert "--eager-attention" not in msg and "\n" not in msg


def test_eager_attention_is_suggested_only_inside_attention_code():
    from graphsurgeon.capture.failures import explain_failure

    def failure(filename: str) -> BaseException:
        code = compile("def sdpa_attention_forward(q):\n    raise RuntimeError('cannot lower is_causal')\n", filename, "exec")
        scope: dict = {}
        exec(code, scope)  # noqa: S102 - a function whose frames carry `filename`
        try:
            scope["sdpa_attention_forward"](None)
        except RuntimeError as err:
            return err
        raise AssertionError("no failure")

    inside = explain_failure(failure("/x/transformers/integrations/sdpa_attention.py"), "m", "sdpa")
    assert "sdpa_attention.py:2" in inside and "--eager-attention" in inside
    assert "--eager-attention" not in explain_failure(failure("/x/transformers/integrations/sdpa_attention.py"), "m", "eager")
    assert "--eager-attention" not in explain_failure(failure("/x/transformers/models/m/modeling_m.py"), "m", "sdpa")


class NoGradRegion(torch.nn.Module):
    """A forward with a `torch.no_grad()` block (as DeepSeek-V3.2's indexer has): one flat graph after capture."""

    def __init__(self):
        super().__init__()
        self.proj, self.score = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)

    def forward(self, x):
        with torch.no_grad():
            pick = self.score(x).squeeze(-1).softmax(-1)
        return self.proj(x) * pick[..., None]


def test_no_grad_region_is_inlined():
    torch.manual_seed(0)
    model = NoGradRegion().eval()
    x = torch.randn(2, 5, 8)
    cm = capture(model, example_inputs={"x": x})
    assert not any("wrap_with_set_grad_enabled" in str(n.target) for n in cm.gm.graph.nodes)
    assert cm.notes == []  # nothing was refused
    assert any(n.meta.get("grad_enabled") is False for n in cm.gm.graph.nodes)
    y = torch.randn(3, 5, 8)
    with torch.no_grad():
        assert torch.equal(cm.run(x=y)["output"], model(y))


def test_plain_module_capture_says_the_range_it_used():
    class Short(torch.nn.Module):
        def forward(self, x):
            if x.shape[1] > 16:
                raise ValueError("too long")
            return x * 2

    cm = capture(Short(), example_inputs={"x": torch.randn(2, 10)})
    assert cm.notes == ["torch.export refused any seq; captured with seq ≤ 16, the range torch.export suggested"]


class KwargsOnly(torch.nn.Module):
    """HF-style forward taking **kwargs and no attention_mask (as FNet's does): captured with input_ids alone."""

    def __init__(self):
        super().__init__()
        self.config = GuardedConfig()
        self.wte, self.head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50)

    def forward(self, input_ids, **kwargs):
        return {"logits": self.head(self.wte(input_ids))}


def test_mask_is_given_only_to_a_forward_that_names_it():
    cm = capture(KwargsOnly().eval())
    assert cm.input_names == ["input_ids"]


class Windowed(torch.nn.Module):
    """HF-style: the sequence cut into windows of 4 tokens, the incomplete last one dropped (as DeepSeek-V4's
    compressors do: `kv[:, :(seq // 4) * 4].view(batch, seq // 4, 4, -1)`); torch.export guards `seq` on being a
    multiple of 4, which no range can prove."""

    def __init__(self):
        super().__init__()
        self.config = GuardedConfig()
        self.wte, self.head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50)

    def forward(self, input_ids, attention_mask=None):
        seq = input_ids.shape[1]
        h = self.wte(input_ids)
        windows = h[:, :(seq // 4) * 4].view(h.shape[0], seq // 4, 4, -1).mean(2)
        return {"logits": self.head(h + windows.mean(1, keepdim=True))}


def test_a_sequence_cut_into_windows_is_captured_as_a_multiple_of_the_window():
    from graphsurgeon.capture.ranges import divisor_guard
    from graphsurgeon.export.verify_cases import _dim_sizes

    torch.manual_seed(0)
    model = Windowed().eval()
    cm = capture(model)
    assert cm.dims.multiples == {"seq": 4} and cm.example_inputs["input_ids"].shape[1] == 12
    note = next(n for n in cm.notes if "multiple of 4" in n)
    assert note.startswith(f"seq is a multiple of 4 ({cm.dims.lows['seq']} ≤ seq ≤ 64)") and "windows of 4" in note
    assert not any("runtime assertion" in n for n in cm.notes)
    sizes = [_dim_sizes(cm, length)["seq"] for length in (0, 1)]  # the self-check's two lengths
    assert all(s % 4 == 0 for s in sizes) and len(set(sizes)) == 2
    with torch.no_grad():
        for seq in sizes + [64]:
            ids = torch.randint(0, 50, (3, seq))
            assert torch.equal(cm.run(input_ids=ids)["logits"], model(ids)["logits"])
        with pytest.raises(Exception, match="Guard failed"):  # a length the note does not allow is refused
            cm.run(input_ids=torch.randint(0, 50, (3, 13)))
    text = ("  - Not all values of seq = L['input_ids'].size()[1] in the specified range seq <= 64 satisfy the generated "
            "guard (16*L['input_ids'].size()[1]) != (64*(L['input_ids'].size()[1] // 4)).\n  - Not all values of seq = "
            "L['input_ids'].size()[1] in the specified range seq <= 64 satisfy the generated guard 8 <= "
            "L['input_ids'].size()[1] and L['input_ids'].size()[1] <= 11\n")  # DeepSeek-V4's, verbatim
    assert divisor_guard(text, {"batch", "seq"}) == ("seq", 4, "(16*seq) != (64*(seq // 4))")
    assert divisor_guard(text.replace("// 4", "+ 4"), {"batch", "seq"}) is None
