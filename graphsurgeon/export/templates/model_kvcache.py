# ----------------------------------------------------------------------------- the KV cache


class KVCache:
    """One attention layer's keys and values of the tokens seen so far: `update` puts them before the new ones."""

    def __init__(self, past: tuple | None = None) -> None:
        self.key, self.value = past if past is not None else (None, None)

    def update(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.key is not None:  # [batch, heads, past + new, head_dim]
            key, value = torch.cat([self.key, key], dim=2), torch.cat([self.value, value], dim=2)
        self.key, self.value = key, value
        return key, value


def causal_rows(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor | None:
    """The causal mask of the new tokens (its last rows) when keys of cached tokens come first; None where SDPA needs
    none (no padding: is_causal without a cache, and one new token reads every key)."""
    q, k = query.shape[2], key.shape[2]
    if mask is not None:
        return mask[:, :, -q:]
    if 1 < q < k:  # several new tokens after cached ones: each reads the cached ones and the new ones up to itself
        return torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)
    return None
