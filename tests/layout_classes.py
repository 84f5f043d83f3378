"""Hand-written nn.Modules for the coverage classes of layout (tests/test_layout_classes.py) and the oracles they
are checked against: the module itself (B = 0), its weights with ΔW = B·A·scaling folded in by hand, and PEFT on
the same modules with the same A and B. None of these uses graphsurgeon's analysis."""

from __future__ import annotations

import copy

import torch
from torch import nn

from graphsurgeon.surgery import lora_weights

D, H = 32, 4  # width and heads of every model here


def heads(x: torch.Tensor) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, H, D // H).transpose(1, 2)


def merge(o: torch.Tensor) -> torch.Tensor:
    b, _, t, _ = o.shape
    return o.transpose(1, 2).reshape(b, t, D)


# ---- 1: blocks with numbered children ---------------------------------------------------------------------------
class Gate(nn.ModuleList):
    """A list with a forward that is not a chain: self[0](x) · sigmoid(self[1](x))."""

    def forward(self, x):
        return self[0](x) * torch.sigmoid(self[1](x))


class ListAttention(nn.Module):
    """q, k, v as an nn.ModuleList inside the attention (children qkv.0, qkv.1, qkv.2)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.ModuleList([nn.Linear(D, D) for _ in range(3)])
        self.out = nn.Linear(D, D)

    def forward(self, x):
        q, k, v = (heads(m(x)) for m in self.qkv)
        return self.out(merge(nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)))


class SequentialBlock(nn.Module):
    """Attention, an MLP that is an nn.Sequential (ffn.0, ffn.1, ffn.2) and a Gate list."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = ListAttention()
        self.ffn = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
        self.gate = Gate([nn.Linear(D, D), nn.Linear(D, D, bias=False)])

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.gate(self.ffn(x))


class Stack(nn.Module):
    """Embedding, two blocks of `block`, a final Linear."""

    def __init__(self, block, vocab: int = 50) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, D)
        self.layers = nn.ModuleList([block() for _ in range(2)])
        self.head = nn.Linear(D, vocab)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class SharedStack(Stack):
    """One layer's weights shared by every layer, as ALBERT shares them: `block` called twice (a module called more
    than once is one LoRA on its projection, applied at every call, as PEFT adapts it)."""

    def __init__(self, block, vocab: int = 50) -> None:
        super().__init__(block, vocab)
        self.layers = nn.ModuleList([block()])

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for _ in range(2):
            x = self.layers[0](x)
        return self.head(x)


# ---- 5: a dtype conversion that changes nothing, returned by one module and read by another ------------------------
class Router(nn.Module):
    """Returns its weights through `.to(x.dtype).float()` (no-op casts at float32), as ErgoTopkRouter does."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, 4)

    def forward(self, x):
        w = self.linear(x).sigmoid() * 0.5
        return x, w.to(x.dtype).float()


class Experts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(D, D)

    def forward(self, x, w):
        return self.up(x) * w.mean(-1).unsqueeze(-1)


class Routed(nn.Module):
    """The router's weights go to a sibling module (ErgoMoE: gate -> experts)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.experts = Router(), Experts()

    def forward(self, x):
        _, w = self.gate(x)
        return self.experts(x, w) + x


class TinyForCausalLM(Stack):
    """A causal LM by its name (model.py gets a KV cache and generate())."""


def build(block, stack=Stack) -> nn.Module:
    """`block` in a `stack` (a class with `whole_model` set is the model itself), biases made non-zero."""
    torch.manual_seed(0)
    model = (block() if getattr(block, "whole_model", False) else stack(block)).eval()
    with torch.no_grad():  # biases non-zero: a bias lost or doubled shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


# ---- oracles ---------------------------------------------------------------------------------------------------
def with_delta(model: nn.Module, cm) -> nn.Module:
    """A copy of `model` with each LoRA of `cm` folded into its target's weight by hand (whole modules)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for path, block in cm.loras.items():
            a, b = lora_weights(cm, path)
            t = block.target
            assert t.columns is None, "a whole-module target"
            w = model.get_submodule(t.module).weight
            delta = (b.weight @ a.weight) * block.config.scaling  # [out, in]
            w += delta.reshape(w.shape)  # a kernel-1 Conv1d's weight is [out, in, 1]
    return model


def with_peft(model: nn.Module, cm) -> nn.Module:
    """PEFT's LoRA on the same modules (r, alpha per module as the blocks have them), with the same A and B."""
    import peft

    blocks = {b.target.module: b for b in cm.loras.values()}
    ranks = {m: b.config.r for m, b in blocks.items()}
    alphas = {m: b.config.alpha for m, b in blocks.items()}
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=sorted(blocks), rank_pattern=ranks, alpha_pattern=alphas)).eval()
    with torch.no_grad():
        for module, block in blocks.items():
            a, b = lora_weights(cm, block.path)
            layer = wrapped.base_model.model.get_submodule(module)
            layer.lora_A["default"].weight.copy_(a.weight.reshape(layer.lora_A["default"].weight.shape))
            layer.lora_B["default"].weight.copy_(b.weight.reshape(layer.lora_B["default"].weight.shape))
    return wrapped


# ---- 2: attention cores written in other spellings ---------------------------------------------------------------
class QKV(nn.Module):
    """Separate q, k, v, o projections; subclasses write the attention core."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x):
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        return x + self.o(merge(self.core(q, k, v)))


class SdpaAttention(QKV):
    """The core as one scaled_dot_product_attention call."""

    def core(self, q, k, v):
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


class TwoMapAttention(QKV):
    """Two attention maps from one q and k (DiffLlama): each reads half of v's heads, the second map's output is
    subtracted from the first's."""

    def core(self, q, k, v):
        v1, v2 = (x.repeat(1, 2, 1, 1) for x in v.chunk(2, dim=1))
        o1 = nn.functional.scaled_dot_product_attention(q, k, v1, is_causal=True)
        o2 = nn.functional.scaled_dot_product_attention(q, k, v2, is_causal=True)
        return o1 - 0.5 * o2


class GlobalLocalAttention(QKV):
    """q, k, v each called twice in one forward, on the tokens and on learned global states (PegasusX's
    global-local attention): the tokens attend to the global and token keys, the globals to the tokens; one LoRA per
    projection applies at both of its calls, as PEFT adapts it."""

    def __init__(self) -> None:
        super().__init__()
        self.globals = nn.Parameter(torch.randn(1, 2, D))

    def forward(self, x):
        g = self.globals.expand(x.shape[0], -1, -1)
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        gq, gk, gv = heads(self.q(g)), heads(self.k(g)), heads(self.v(g))
        local = nn.functional.scaled_dot_product_attention(q, torch.cat([gk, k], 2), torch.cat([gv, v], 2))
        pooled = nn.functional.scaled_dot_product_attention(gq, k, v)
        return x + self.o(merge(local)) + self.o(merge(pooled)).mean(1, keepdim=True)


class BiasFreeGlobalLocal(GlobalLocalAttention):
    """GlobalLocalAttention whose q has no bias."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(D, D, bias=False)


class FusedTwice(nn.Module):
    """A fused qkv projection split for the attention, and called a second time on learned global states whose
    output is used whole (no q/k/v columns at that call): a LoRA on q's columns cannot apply at both calls."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.o = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.globals = nn.Parameter(torch.randn(1, 2, D))

    def forward(self, x):
        q, k, v = (heads(t) for t in self.qkv(x).split(D, -1))
        pooled = self.qkv(self.globals).mean(-1, keepdim=True)  # [1, 2, 1]: the whole output, no split
        return x + self.o(merge(nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))) + pooled.mean(1)


class RoutedBlock(nn.Module):
    """SDPA attention, then a routed MLP whose weights cross modules through no-op casts."""

    def __init__(self) -> None:
        super().__init__()
        self.attn, self.mlp = SdpaAttention(), Routed()

    def forward(self, x):
        x = self.attn(x)
        return x + self.mlp(x)


class QuantLinear(nn.Module):
    """A projection that is not a torch.nn.Linear (I-BERT's QuantLinear with quantization off): F.linear on its
    own weight and bias."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) * n_in ** -0.5)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


class QuantAttention(SdpaAttention):
    """q is a QuantLinear (PEFT cannot adapt it), v an nn.Linear subclass (PEFT adapts it, by isinstance)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.v = QuantLinear(D, D), type("TunedLinear", (nn.Linear,), {})(D, D)


class Norm(nn.Module):
    """RMS norm in float32, cast back with `.type_as(x)` on the line that spells `.float()` (a no-op cast the code
    reads through at float32), as NanoChatRMSNorm writes it."""

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def forward(self, x):
        return self._norm(x.float()).type_as(x)


class NormedAttention(SdpaAttention):
    """The input and q, k normalised by Norm modules (NanoChat): q, k, v read a no-op cast made in a sibling module,
    and the key a KV cache keeps is one."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.q_norm, self.k_norm = Norm(), Norm(), Norm()

    def forward(self, x):
        return super().forward(self.norm(x))

    def core(self, q, k, v):
        return super().core(self.q_norm(q), self.k_norm(k), v)


class EinsumAttention(QKV):
    """torch.einsum on both sides of the softmax."""

    def core(self, q, k, v):
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * (D // H) ** -0.5
        return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), v)


class InPlaceAttention(QKV):
    """In-place ops in the score chain (div_, masked_fill_, +=, mul_ on the probabilities) and a T5-like
    relative-position bias (an embedding of clamped key - query distances) added to the scores."""

    def __init__(self) -> None:
        super().__init__()
        self.rel = nn.Embedding(9, H)

    def core(self, q, k, v):
        t = q.shape[2]
        scores = q @ k.transpose(-1, -2)
        scores.div_((D // H) ** 0.5)
        pos = torch.arange(t, device=q.device)
        scores += self.rel((pos[None, :] - pos[:, None]).clamp(-4, 4) + 4).permute(2, 0, 1)
        scores.masked_fill_(torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        probs = scores.softmax(-1)
        probs.mul_(1.0)
        return probs @ v


class BmmAttention(QKV):
    """torch.bmm over [batch·heads, seq, head_dim], the scale folded into q, the probabilities as the second
    operand of a transposed product (v^T @ p^T)."""

    def core(self, q, k, v):
        b, h, t, d = q.shape
        q, k, v = (x.reshape(b * h, t, d) for x in (q * d ** -0.5, k, v))
        probs = torch.bmm(q, k.transpose(1, 2)).softmax(-1)
        return torch.bmm(v.transpose(1, 2), probs.transpose(1, 2)).transpose(1, 2).reshape(b, h, t, d)


class SinkAttention(QKV):
    """A learnt sink score per head concatenated after the keys' scores (`cat`), the row maximum subtracted, the
    sink's column sliced off the probabilities (MiMo-V2-Flash, GPT-OSS eager); before that the scores are kept
    above the dtype's minimum (XGLM's `torch.max(scores, finfo.min)`)."""

    def __init__(self) -> None:
        super().__init__()
        self.sinks = nn.Parameter(torch.randn(H))

    def core(self, q, k, v):
        b, _, t, _ = q.shape
        scores = q @ k.transpose(2, 3) * (D // H) ** -0.5
        scores = scores + torch.full((t, t), float("-inf"), device=q.device).triu(1)
        scores = torch.max(scores, torch.tensor(torch.finfo(scores.dtype).min, device=q.device))
        scores = torch.cat([scores, self.sinks.reshape(1, -1, 1, 1).expand(b, -1, t, -1)], dim=-1)
        probs = (scores - scores.max(dim=-1, keepdim=True).values).softmax(-1)
        return probs[..., :-1] @ v


class RoutedQAttention(QKV):
    """q from a mixture of experts (JetMoE's mixture of attention heads): a router picks one expert per token, the
    tokens sorted by expert go through that expert's weight, and their rows are summed back with index_add."""

    def __init__(self) -> None:
        super().__init__()
        self.router = nn.Linear(D, 2)
        self.experts = nn.Parameter(torch.randn(2, D, D) * D ** -0.5)

    def forward(self, x):
        b, t, _ = x.shape
        flat = x.reshape(-1, D)
        weight, top = self.router(flat).softmax(-1).topk(1, dim=-1)
        order = top[:, 0].argsort()
        rows = torch.einsum("nd,nod->no", flat[order], self.experts[top[order, 0]]) * weight[order]
        q = heads(torch.zeros_like(flat).index_add(0, order, rows).view(b, t, D))
        k, v = heads(self.k(x)), heads(self.v(x))
        return x + self.o(merge(nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)))


# ---- 3: projections that are 1×1 convolutions ----------------------------------------------------------------------
class ConvAttention(nn.Module):
    """q, k, v as kernel-1 nn.Conv1d over [batch, channels, seq] (q grouped), as convolutional models write them."""

    groups = 1

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Conv1d(D, D, 1, groups=self.groups)
        self.k, self.v = nn.Conv1d(D, D, 1), nn.Conv1d(D, D, 1)
        self.o = nn.Linear(D, D)

    def forward(self, x):
        b, t, _ = x.shape
        c = x.transpose(1, 2)  # [batch, channels, seq]
        q, k, v = (m(c).view(b, H, D // H, t).transpose(2, 3) for m in (self.q, self.k, self.v))
        o = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.o(merge(o))


class GroupedConvAttention(ConvAttention):
    groups = 2


class FusedConvAttention(ConvAttention):
    """One kernel-1 conv for q, k and v (3·D channels), split on the channel axis: q and v are slices of it."""

    def __init__(self) -> None:
        super().__init__()
        del self.q, self.k, self.v
        self.qkv = nn.Conv1d(D, 3 * D, 1)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (y.reshape(b, H, D // H, t).transpose(2, 3) for y in self.qkv(x.transpose(1, 2)).chunk(3, dim=1))
        o = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.o(merge(o))


# ---- 4: one module called with different code per call -------------------------------------------------------------
class KindRotary(nn.Module):
    """One rotary module for two kinds of layer: each call names its kind and reads that kind's own inv_freq
    (Gemma 3, ModernBERT, LFM, MiMo: `self.rotary_emb(x, position_ids, layer_type)`)."""

    def __init__(self) -> None:
        super().__init__()
        half = torch.arange(0, D // H, 2, dtype=torch.float32) / (D // H)
        self.register_buffer("local_inv_freq", 1.0 / 10.0 ** half, persistent=False)
        self.register_buffer("global_inv_freq", 1.0 / 1000.0 ** half, persistent=False)

    def forward(self, x, kind: str):
        t = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)
        freqs = t[:, None] * getattr(self, f"{kind}_inv_freq")[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)  # [seq, head_dim]
        return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class RotaryAttention(QKV):
    """q and k rotated by the cos, sin its caller passes; SDPA."""

    def forward(self, x, cos, sin):
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        return x + self.o(merge(nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)))


class KindRotaryModel(nn.Module):
    """Layer 0 local, layer 1 global: the one rotary module is called twice, each call reading other buffers."""

    whole_model = True

    def __init__(self, vocab: int = 50) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, D)
        self.rotary = KindRotary()
        self.layers = nn.ModuleList([RotaryAttention() for _ in range(2)])
        self.head = nn.Linear(D, vocab)

    def forward(self, input_ids):
        x = self.emb(input_ids)
        local, wide = self.rotary(x, "local"), self.rotary(x, "global")
        x = self.layers[0](x, *local)
        return self.head(self.layers[1](x, *wide))


class CastKindRotary(nn.Module):
    """One rotary module for two kinds of layer reading one buffer through a no-op `.to(float32)` (DeepSeek V4's
    compressor rotary): tracing gives the second call the first call's cast, and only the global call scales it."""

    def __init__(self) -> None:
        super().__init__()
        half = torch.arange(0, D // H, 2, dtype=torch.float32) / (D // H)
        self.register_buffer("inv_freq", 1.0 / 10.0 ** half, persistent=False)

    def forward(self, x, kind: str):
        t = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)
        freq = self.inv_freq.to(torch.float32)
        freqs = t[:, None] * (freq if kind == "local" else freq * 0.25)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos(), emb.sin()


class CastKindRotaryModel(KindRotaryModel):
    """KindRotaryModel with CastKindRotary."""

    def __init__(self, vocab: int = 50) -> None:
        super().__init__(vocab)
        self.rotary = CastKindRotary()

