# ----------------------------------------------------------------------------- Hugging Face conventions


class ModelOutput(dict):
    """The outputs by name, read as Hugging Face's are: out["logits"], out.logits, out[0] (`loss` first when labels
    were given), out.to_tuple()."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the model returned no {name!r}; it returned {', '.join(self)}") from None

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(self.values())


class HiddenStates:
    """Hugging Face's `hidden_states` (output_hidden_states=True), recorded by forward hooks while the model runs:
    the first layer's input, every layer's output, the last one replaced by the final hidden state (the output of
    the module that runs the layers, after its final norm where it has one)."""

    def __init__(self, model: nn.Module, layers: list[str], final: str = "") -> None:
        self.states: list[torch.Tensor] = []
        self.final: torch.Tensor | None = None
        self.hooks = [model.get_submodule(path).register_forward_hook(self._layer) for path in layers]
        if final:
            self.hooks.append(model.get_submodule(final).register_forward_hook(self._final))

    def _layer(self, module: nn.Module, args: tuple, output) -> None:
        if not self.states:
            self.states.append(args[0])
        self.states.append(output[0] if isinstance(output, tuple) else output)

    def _final(self, module: nn.Module, args: tuple, output) -> None:
        self.final = output[0] if isinstance(output, tuple) else output

    def result(self, final: torch.Tensor | None = None) -> tuple:
        for hook in self.hooks:
            hook.remove()
        return tuple(self.states[:-1]) + (self.final if final is None else final,)


def find_packed_sequence_indices(position_ids: torch.Tensor) -> torch.Tensor:
    """[batch, seq] -> which packed sequence each token is in: a new one starts wherever positions do not go up by 1."""
    step = torch.diff(position_ids, prepend=position_ids[:, :1] - 1, dim=-1)
    return (step != 1).cumsum(-1)


def same_sequence(
    mask: torch.Tensor | None, packed_sequence_mask: torch.Tensor | None, causal: bool = False
) -> torch.Tensor | None:
    """The attention mask limited to query/key pairs of one packed sequence (packed_sequence_mask None: unchanged).
    `mask` None is the mask builder's "nothing padded" (then `causal` says whether the model is causal)."""
    if packed_sequence_mask is None:
        return mask
    same = packed_sequence_mask[:, None, :, None] == packed_sequence_mask[:, None, None, :]  # [batch, 1, seq, seq]
    if mask is None:
        return same.tril() if causal else same
    return mask & same


def shift_right(ids: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """Hugging Face's decoder_input_ids from labels / input_ids: `start` first, the last token dropped, -100 -> pad."""
    out = torch.cat([torch.full_like(ids[..., :1], start), ids[..., :-1]], -1)
    return out.masked_fill(out == -100, pad)


def hf_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss_type: str, num_labels: int, problem_type: str | None
) -> torch.Tensor:
    """The loss Hugging Face computes from `logits` and `labels` (label -100 is ignored)."""
    if loss_type == "ForCausalLM":  # tokens < n predict token n: shift the labels left, the last one predicts nothing
        labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
    if loss_type in ("ForCausalLM", "ForMaskedLM", "ForTokenClassification", "ForConditionalGeneration"):
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device), ignore_index=-100
        )
    if problem_type is None:  # ForSequenceClassification: the problem follows num_labels and the labels' dtype
        problem_type = (
            "regression"
            if num_labels == 1
            else "single_label_classification"
            if labels.dtype in (torch.long, torch.int)
            else "multi_label_classification"
        )
    labels = labels.to(logits.device)
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze()) if num_labels == 1 else F.mse_loss(logits, labels)
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1), ignore_index=-100)
    return F.binary_cross_entropy_with_logits(logits, labels)


class WeightsError(ValueError):
    """model.safetensors is missing, truncated or corrupt, or lacks a tensor model.py needs."""


def read_weights(path: str, expected: dict, device: str = "cpu", holds: dict | None = None) -> dict:
    """The tensors of `path`, checked: complete file, every tensor in `expected` ({name: the model's tensor, on any
    device}) present with its shape, floating point where the model's is; none the model has no place for (`holds`:
    its whole state dict) — a deeper config's layers would otherwise go unread without a word."""
    if not os.path.isfile(path):
        raise WeightsError(f"{path} does not exist; model.py needs the model.safetensors it was exported with.")
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"a header of {header_len} bytes does not fit in {size} bytes")
            header = json.loads(fh.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise ValueError(f"it has {size} bytes, its header needs {8 + header_len + end}")
        tensors = load_file(path, device=str(device))
    except Exception as err:  # noqa: BLE001 - any reader failure is one sentence
        raise WeightsError(
            f"{path} is truncated or corrupt ({str(err).splitlines()[0][:200]}); "
            "copy it again or export the folder again."
        ) from None
    missing = [name for name in expected if name not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(
            f"{path} has no tensor {missing[0]!r}{more}, which model.py needs; "
            "use the model.safetensors this model.py was exported with."
        )
    extra = [name for name in tensors if holds is not None and name not in holds]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise WeightsError(
            f"{path} has a tensor {extra[0]!r}{more} model.py has no place for: the file is of another model or "
            "config than this model.py and config.json; use the model.safetensors this model.py was exported with."
        )
    for name, want in expected.items():
        if tuple(tensors[name].shape) != tuple(want.shape):
            raise WeightsError(
                f"{path}: {name!r} has shape {list(tensors[name].shape)} but model.py needs "
                f"{list(want.shape)}; use the model.safetensors this model.py was exported with."
            )
        if tensors[name].is_floating_point() != want.is_floating_point():
            raise WeightsError(
                f"{path}: {name!r} is {str(tensors[name].dtype)[6:]} but model.py needs "
                f"{str(want.dtype)[6:]}; use the model.safetensors this model.py was exported with."
            )
    return tensors
