class Conv1D(nn.Module):
    """GPT-2's linear layer: the weight is stored [in, out] (Hugging Face's layout and state-dict keys)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.weight.shape[0]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)  # [tokens, in] @ [in, out]
        return out.view(*x.shape[:-1], self.nf)


class LoRA(nn.Module):
    """A LoRA update the way PEFT computes it: lora_B(lora_A(dropout(x))) * scaling (added by the caller)."""

    def __init__(self, in_features: int, out_features: int, r: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.lora_A = nn.Linear(in_features, r, bias=False)  # [r, in]
        self.lora_B = nn.Linear(r, out_features, bias=False)  # [out, r]
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class LoRALinear(nn.Linear):
    """nn.Linear with a LoRA, as PEFT wraps it: base(x) + lora_B(lora_A(dropout(x))) * scaling."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, r: int, scaling: float, dropout: float = 0.0
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.lora_A = nn.Linear(in_features, r, bias=False)  # [r, in]
        self.lora_B = nn.Linear(r, out_features, bias=False)  # [out, r]
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class LoRAConv1D(Conv1D):
    """Conv1D with a LoRA, as PEFT wraps it (fan_in_fan_out): base(x) + lora_B(lora_A(dropout(x))) * scaling."""

    def __init__(self, nf: int, nx: int, *, r: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__(nf, nx)
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.lora_A = nn.Linear(nx, r, bias=False)  # [r, in]
        self.lora_B = nn.Linear(r, nf, bias=False)  # [out, r]
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class LoRAConv1x1(nn.Conv1d):
    """A kernel-1 nn.Conv1d (channels first: [batch, in, seq]) with a LoRA over its channels, as PEFT wraps it:
    base(x) + lora_B(lora_A(dropout(x))) * scaling (PEFT's lora_A/lora_B are kernel-1 convs [r, in, 1]/[out, r, 1])."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        bias: bool = True,
        *,
        r: int,
        scaling: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.lora_A = nn.Linear(in_channels, r, bias=False)  # [r, in]
        self.lora_B = nn.Linear(r, out_channels, bias=False)  # [out, r]
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.lora_B(self.lora_A(self.lora_dropout(x.transpose(1, 2)))) * self.scaling  # [batch, seq, out]
        return super().forward(x) + update.transpose(1, 2)


def grouped_mm(input: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Mixture-of-experts matmul: rows sorted by expert, expert i's rows (offs[i-1]..offs[i]) times weight[i]
    (Hugging Face's grouped_mm fallback, with no library op)."""
    out = input.new_zeros(input.size(0), weight.size(2))
    start = 0
    for i, end in enumerate(offs.tolist()):
        if end > start:
            out[start:end] = input[start:end] @ weight[i]
        start = end
    return out


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotates half the hidden dims of the input (Hugging Face's helper of the rotary embedding)."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def _get_alibi_slopes(num_heads: int, device: torch.device) -> torch.Tensor:
    """ALiBi's slope per head, as Hugging Face's Bloom computes it: the powers of 2^(-8/n) for the n heads of the
    largest power of 2 <= num_heads, then odd powers of 2^(-4/n) for the rest."""
    closest_power_of_2 = 2 ** (num_heads.bit_length() - 1)
    base = torch.full((), 2 ** (-8 / closest_power_of_2), device=device, dtype=torch.float32)
    powers = torch.arange(1, 1 + closest_power_of_2, device=device, dtype=torch.int32)
    slopes = torch.pow(base, powers)
    if closest_power_of_2 != num_heads:
        extra_base = torch.full((), 2 ** (-4 / closest_power_of_2), device=device, dtype=torch.float32)
        num_remaining_heads = min(closest_power_of_2, num_heads - closest_power_of_2)
        extra_powers = torch.arange(1, 1 + 2 * num_remaining_heads, 2, device=device, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, extra_powers)], dim=0)
    return slopes
