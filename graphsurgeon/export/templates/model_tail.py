def add_lora(model: nn.Module) -> None:
    """Build each LoRA of LORAS that the classes above leave out (layers that differ, or a projection whose calls
    are written where they are called: then `have` only holds its tensors), the way PEFT injects them."""
    for path, hp in LORAS.items():
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        have = getattr(parent, name, None)
        lora = dict(r=hp["r"], scaling=hp["scaling"], dropout=hp["dropout"])
        n_in, n_out = lora_widths(hp, parent if hp["kind"] == "update" else have)
        if hp["kind"] == "update" and not isinstance(have, LoRA):
            parent.add_module(name, LoRA(n_in, n_out, **lora))
        elif hp["kind"] == "linear" and type(have).__name__ != "LoRALinear":
            bias = getattr(have, "bias", None) is not None  # a holder of a bias-free projection has no .bias
            parent.add_module(name, LoRALinear(n_in, n_out, bias, **lora))
        elif hp["kind"] == "conv1d" and type(have).__name__ != "LoRAConv1D":
            parent.add_module(name, LoRAConv1D(n_out, n_in, **lora))
        elif hp["kind"] == "conv1x1" and type(have).__name__ != "LoRAConv1x1":
            bias = getattr(have, "bias", None) is not None
            parent.add_module(name, LoRAConv1x1(n_in, n_out, 1, bias, **lora))


def lora_widths(hp: dict, projection) -> tuple[int, int]:
    """A LoRA's (in, out) widths at this model's config: those of the projection it adapts (`of`: that projection's
    output width at the exported config; a slice of it keeps its share), else LORAS's own."""
    if "of" in hp and isinstance(projection, nn.Linear):
        n_in, n_out = projection.in_features, projection.out_features
    elif "of" in hp and type(projection).__name__ == "Conv1D":  # GPT-2's: weight [in, out]
        n_in, n_out = projection.weight.shape
    else:
        return hp["in_features"], hp["out_features"]
    if n_out * hp["out_features"] % hp["of"]:
        return hp["in_features"], hp["out_features"]
    return n_in, n_out * hp["out_features"] // hp["of"]


def tie_weights(model: nn.Module) -> None:
    """Share the tensors the captured model shares (TIED: name -> the name it is saved under)."""
    for name, source in TIED.items():
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, model.get_parameter(source))


def generation_defaults(folder: str) -> dict:
    """The token ids Hugging Face's generate() stops and pads with when none are given: generation_config.json's,
    else config.json's (as transformers' GenerationConfig.from_model_config reads them)."""
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            return {key: data.get(key) for key in ("eos_token_id", "pad_token_id")}
    return {}


INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
)  # what layers' reset_parameters call


def load_model(folder: str = ".", device=None, dtype=None) -> nn.Module:
    """The model with the weights of `folder`/model.safetensors, on `device` (default: the CPU), its floating tensors
    in `dtype` (default: as saved; torch.bfloat16 / torch.float16 run as Hugging Face runs in them), its sizes from
    `folder`/config.json (Config). WeightsError: one sentence on what is wrong: a missing or truncated file, a tensor
    model.py needs that is not there. The model is in eval mode, as `from_pretrained` returns one (`.train()` for
    dropout)."""
    config = Config.from_json(os.path.join(folder, "config.json"))
    skipped = {name: getattr(nn.init, name) for name in INIT_FUNCTIONS}
    for name in skipped:  # every tensor comes from the file: no random init (as transformers' no_init_weights)
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        with torch.device("meta"):  # no memory either
            model = Model(config)
    finally:
        for name, function in skipped.items():
            setattr(nn.init, name, function)
    expected = {name: t for name, t in model.state_dict().items() if name not in TIED}
    weights = os.path.join(folder, "model.safetensors")
    tensors = read_weights(weights, expected, "cpu" if device is None else device, model.state_dict())
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict({k: v for k, v in tensors.items() if k not in TIED}, strict=False, assign=True)
    floating = dtype or next((v.dtype for v in tensors.values() if v.is_floating_point()), None)
    for module in model.modules():  # buffers computed from the config (rotary's inv_freq): for real this time
        if hasattr(module, "init_buffers"):
            computed = [name for name, buffer in module.named_buffers(recurse=False) if buffer.is_meta]
            module.init_buffers(config)
            for name in computed:  # in the model's dtype, as the forward reads it (cos.to(self.inv_freq.dtype))
                buffer = getattr(module, name)
                cast = floating if buffer.is_floating_point() else None
                setattr(module, name, buffer.to(device="cpu" if device is None else device, dtype=cast))
    tie_weights(model)
    if hasattr(model, "generate"):
        model.generation_config = generation_defaults(folder)
    return model.eval()
