# ----------------------------------------------------------------------------- generation


def warp(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Hugging Face's sampling processors in its order: temperature, top-k, top-p (tokens left out get -inf)."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(logits, descending=False)
        drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False  # the likeliest token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate(
    self,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """`input_ids` followed by up to `max_new_tokens` tokens, as Hugging Face's generate() writes them: the argmax
    (greedy) or a sample after temperature, top-k and top-p; a batch padded on the left comes with its
    attention_mask; a row that wrote an eos token goes on with pad_token_id (default: the eos) until all have.
    eos_token_id / pad_token_id default as Hugging Face's do: the folder's (load_model reads them). A model whose
    forward keeps no cache (see the folder's README) reads the whole sequence again for each new token."""
    defaults = getattr(self, "generation_config", {})
    eos_token_id = defaults.get("eos_token_id") if eos_token_id is None else eos_token_id
    pad_token_id = defaults.get("pad_token_id") if pad_token_id is None else pad_token_id
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else eos[0] if eos else 0
    takes = self.forward.__code__.co_varnames
    # a padded batch gets each row's positions (HF's, from the mask); else the forward's own 0, 1, … (after the cache)
    positions = "position_ids" in takes and not bool(attention_mask.all())
    cache = {"use_cache": True} if "use_cache" in takes else {}  # none: the attention keeps no cache
    keep = {"logits_to_keep": 1} if "logits_to_keep" in takes else {}  # the last only
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # left padding: 0 first
    extra = {"position_ids": position_ids} if positions else {}
    out = self(input_ids=input_ids, attention_mask=attention_mask, **extra, **keep, **cache)
    tokens = input_ids
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        logits = out["logits"][:, -1, :].float()  # [batch, vocab]: the next token's
        if do_sample:
            next_token = torch.multinomial(warp(logits, temperature, top_k, top_p).softmax(dim=-1), 1)[:, 0]
        else:
            next_token = logits.argmax(dim=-1)
        next_token = torch.where(unfinished, next_token, torch.full_like(next_token, pad))
        tokens = torch.cat([tokens, next_token[:, None]], dim=-1)
        if eos:
            unfinished &= ~torch.isin(next_token, torch.tensor(eos, device=next_token.device))
        if step == max_new_tokens - 1 or not unfinished.any():
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=-1)
        position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], dim=-1)
        if cache:  # the new token after the cached ones
            inputs = {"input_ids": next_token[:, None], "past_key_values": out["past_key_values"]}
            extra = {"position_ids": position_ids[:, -1:]} if positions else {}
        else:  # the whole sequence again
            inputs = {"input_ids": tokens}
            extra = {"position_ids": position_ids} if positions else {}
        out = self(**inputs, attention_mask=attention_mask, **extra, **keep, **cache)
    return tokens
