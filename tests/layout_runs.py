"""Hand-written nn.Modules for the layouts whose generated model.py compiled but failed when run (issue 20, the
coverage run's olmo / helium, luke / mobilebert / neomme, fnet and funnel) or differed from the graph (mt5's
gelu_new) or lost an output's name (xlnet's `mems` tuple), checked by tests/test_layout_runs.py
against the modules themselves and PEFT (tests/layout_classes.py's oracles). None uses graphsurgeon's analysis."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from layout_classes import D, heads, merge
from torch import nn

VOCAB = 50


class CastNorm(nn.Module):
    """OLMo's LayerNorm: no weights, computed in float32 and cast back to the input's dtype (a cast that changes
    nothing in float32 is the module's last op)."""

    def forward(self, x):
        dtype = x.dtype
        return F.layer_norm(x.to(torch.float32), (D,), None, None, 1e-5).to(dtype)


class CastNormAttention(nn.Module):
    """q, k, v without bias read the output of a norm that ends in a no-op `.to(dtype)` (OLMo, Helium)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.norm = CastNorm()

    def forward(self, x):
        h = self.norm(x)
        q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
        return x + self.o(merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)))


class FourierMixing(nn.Module):
    """FNet's token mixing: the real part of a 2-D FFT over sequence and hidden (`.real` is a property, fft_fftn
    lives in torch.fft), between two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(D, D)
        self.ffn = nn.Linear(D, D)

    def forward(self, x):
        x = x + torch.fft.fftn(self.proj(x), dim=(1, 2)).real / D
        return x + self.ffn(x)


class TiedHeads(nn.Module):
    """Heads that share the embedding's tensors and are not called as modules: `decoder`'s weight (the embedding)
    and bias (the model's `bias`) read as tensors (MobileBERT's LM head, NeoMME's unembedding projection), and an
    `entity_head` tied to the embedding that this forward never uses (LUKE's entity prediction head)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.layers = nn.ModuleList([CastNormAttention() for _ in range(2)])
        self.decoder = nn.Linear(D, VOCAB)
        self.decoder.weight = self.emb.weight
        self.bias = nn.Parameter(torch.zeros(VOCAB))
        self.decoder.bias = self.bias
        self.entity_head = nn.Linear(D, VOCAB, bias=False)
        self.entity_head.weight = self.emb.weight

    def forward(self, input_ids):
        x = self.emb(input_ids)
        for layer in self.layers:
            x = layer(x)
        return x @ self.decoder.weight.t() + self.bias


class TwoStates(nn.Module):
    """Returns the last layer's output and every layer's (Funnel's encoder: the final state and all hidden states)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([CastNormAttention() for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(D) for _ in range(2)])

    def forward(self, x):
        states = [x]
        for layer, norm in zip(self.layers, self.norms):
            states.append(norm(layer(states[-1])))
        return states[-1], tuple(states)


class Upsampling(nn.Module):
    """Funnel's decoder: the final state plus a function of the first block's."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(D, D)

    def forward(self, final_hidden, first_block_hidden):
        return final_hidden + self.mix(first_block_hidden)


class TwoStatesBase(nn.Module):
    """Both outputs of one call kept in one variable and passed on as `encoder_outputs[0]`, `encoder_outputs[1][1]`
    (Funnel's model: the encoder's final and first-block states into its decoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.encoder = TwoStates()
        self.decoder = Upsampling()

    def forward(self, input_ids):
        encoder_outputs = self.encoder(self.emb(input_ids))
        return self.decoder(final_hidden=encoder_outputs[0], first_block_hidden=encoder_outputs[1][1])


class TwoStatesModel(nn.Module):
    """TwoStatesBase and an LM head (Funnel's FunnelForMaskedLM around FunnelModel)."""

    def __init__(self) -> None:
        super().__init__()
        self.base = TwoStatesBase()
        self.head = nn.Linear(D, VOCAB)

    def forward(self, input_ids):
        return self.head(self.base(input_ids))


class TanhGELU(nn.Module):
    """HF's NewGELUActivation (gelu_new): the tanh GELU written as eight ops, which round otherwise than the fused
    F.gelu(approximate="tanh") by an ulp here and there."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * torch.pow(x, 3.0))))


class GatedTanhGELUModel(nn.Module):
    """mT5's layout: an attention, a gated MLP through gelu_new (wi_0, wi_1, wo) and an untied head whose logits
    are large (tens), so an ulp of the activation grows past 1e-5 · (1 + |logit|) where logits cancel."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.attn = CastNormAttention()
        self.wi_0, self.wi_1 = nn.Linear(D, 4 * D, bias=False), nn.Linear(D, 4 * D, bias=False)
        self.wo = nn.Linear(4 * D, D, bias=False)
        self.act = TanhGELU()
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, input_ids):
        x = self.attn(self.emb(input_ids))
        x = x + self.wo(self.act(self.wi_0(x)) * self.wi_1(x))
        return self.head(x)


class WithMems(nn.Module):
    """XLNet's output: a dict whose `logits` is one tensor and whose `mems` is a tuple of every layer's input."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.layers = nn.ModuleList([CastNormAttention() for _ in range(2)])
        self.head = nn.Linear(D, VOCAB)

    def forward(self, input_ids):
        x, mems = self.emb(input_ids), []
        for layer in self.layers:
            mems.append(x)
            x = layer(x)
        return {"logits": self.head(x), "mems": tuple(mems)}


def seeded(cls) -> nn.Module:
    """A `cls` in eval mode, seeded, every parameter moved off its init (a bias lost or doubled shows)."""
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()
