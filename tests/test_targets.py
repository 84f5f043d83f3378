"""Q/K/V targets found by dataflow on seven architectures (tiny configs), including fused and uneven slices."""

import pytest
import torch

from graphsurgeon.surgery import find_targets, projection_targets, resolve_targets
from graphsurgeon.surgery.targets import TargetError, parse_layers
from surgery_models import shared

# arch -> (module of layer-0 q/k/v, kind, columns of q/k/v or None, widths of q/k/v)
EXPECTED = {
    "bert": ("encoder.layer.0.attention.self.{}", ("query", "key", "value"), "linear", None, (64, 64, 64)),
    "roberta": ("encoder.layer.0.attention.self.{}", ("query", "key", "value"), "linear", None, (64, 64, 64)),
    "distilbert": ("transformer.layer.0.attention.{}", ("q_lin", "k_lin", "v_lin"), "linear", None, (64, 64, 64)),
    "gpt2": ("transformer.h.0.attn.{}", ("c_attn",) * 3, "conv1d", ((0, 64), (64, 128), (128, 192)), (64, 64, 64)),
    # multi-query: 16 heads of 4 for q, one shared head for k and v: 64/4/4 (GPTBigCode-1B is 2048/128/128)
    "bigcode": ("transformer.h.0.attn.{}", ("c_attn",) * 3, "linear", ((0, 64), (64, 68), (68, 72)), (64, 4, 4)),
    "opt": ("model.decoder.layers.0.self_attn.{}", ("q_proj", "k_proj", "v_proj"), "linear", None, (64, 64, 64)),
    # grouped-query (4 heads, 2 kv heads) with rotary embeddings between projection and SDPA
    "llama": ("model.layers.0.self_attn.{}", ("q_proj", "k_proj", "v_proj"), "linear", None, (64, 32, 32)),
}


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_qkv_found_by_dataflow(arch):
    cm = shared(arch)
    fmt, leaves, kind, columns, widths = EXPECTED[arch]
    targets = find_targets(cm)
    assert [(t.layer, t.role) for t in targets] == [(i, r) for i in range(2) for r in "qkv"]
    nodes = {n.name: n for n in cm.gm.graph.nodes}
    for i, role in enumerate("qkv"):
        t = targets[i]
        assert t.module == fmt.format(leaves[i])
        assert t.kind == kind
        assert t.columns == (tuple(range(*columns[i])) if columns else None)
        assert t.out_features == widths[i] and t.in_features == 64
        assert nodes[t.target_node].meta["val"].shape[-1] == widths[i]  # the adapted tensor has the slice width
        assert nodes[t.input_node].meta["val"].shape[-1] == 64  # x is what the projection reads
        assert t.attention is not None and t.module.startswith(t.attention.rsplit(".", 1)[0])
    layer1 = [t for t in targets if t.layer == 1]
    assert {t.module.replace(".1.", ".0.") for t in layer1} == {t.module for t in targets if t.layer == 0}


def test_eager_attention_pattern_gives_the_same_targets():
    from graphsurgeon.capture import capture
    from shared_captures import captured

    sdpa, eager = find_targets(captured("tiny-gpt2")), find_targets(capture("tiny-gpt2", eager_attention=True))
    assert [(t.layer, t.role, t.module, t.columns) for t in sdpa] == [(t.layer, t.role, t.module, t.columns) for t in eager]


def test_projection_targets_and_resolver():
    cm = shared("gpt2")
    names = {t.role for t in projection_targets(cm)}
    assert {"c_attn", "c_proj", "c_fc", "lm_head"} <= names
    chosen = resolve_targets(cm, ("q", "v", "c_fc"), "1")
    assert [(t.layer, t.role) for t in chosen] == [(1, "q"), (1, "v"), (1, "c_fc")]
    with pytest.raises(TargetError, match="unknown target 'x'"):
        resolve_targets(cm, ("x",))
    with pytest.raises(TargetError, match="layer 2 is out of range"):
        resolve_targets(cm, ("q",), "0-5")


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("0-2", 4) == [0, 1, 2]
    assert parse_layers("0,3", 4) == [0, 3]
    with pytest.raises(TargetError, match="is not a layer number; give all, a range like 0-5"):
        parse_layers("a-b", 4)


class _NoAttention(torch.nn.Module):
    """q/k/v projections whose outputs are only summed: no attention op, so names are the fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (torch.nn.Linear(8, 8) for _ in range(3))
        self.out = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.out(self.q_proj(x) + self.k_proj(x) * self.v_proj(x))


def test_names_are_the_fallback_without_attention():
    from graphsurgeon.capture import capture_module

    cm = capture_module(_NoAttention(), {"x": torch.randn(2, 5, 8)}, dynamic={"x": {0: "batch", 1: "seq"}})
    assert [(t.role, t.module, t.attention) for t in find_targets(cm)] == \
        [("q", "q_proj", None), ("k", "k_proj", None), ("v", "v_proj", None)]


@pytest.mark.parametrize("arch", ["llama", "bigcode", "opt"])
def test_eager_matmul_softmax_matmul_finds_the_same_targets(arch):
    from graphsurgeon.capture import capture
    from surgery_models import build

    model = build(arch)
    for module in model.modules():
        if hasattr(module, "config"):
            module.config._attn_implementation = "eager"  # attention spelt out: matmul → softmax → matmul
    cm = capture(model)
    assert not any("scaled_dot_product" in str(n.target) for n in cm.gm.graph.nodes)
    key = [(t.layer, t.role, t.module, t.columns, t.out_features) for t in find_targets(cm)]
    assert key == [(t.layer, t.role, t.module, t.columns, t.out_features) for t in find_targets(shared(arch))]
