def add_lora(model: nn.Module) -> None:
    """Build each LoRA of LORAS that the classes above leave out (layers that differ), the way PEFT injects them."""
    for path, hp in LORAS.items():
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        have = getattr(parent, name, None)
        lora = dict(r=hp["r"], scaling=hp["scaling"], dropout=hp["dropout"])
        if hp["kind"] == "update" and not isinstance(have, LoRA):
            parent.add_module(name, LoRA(hp["in_features"], hp["out_features"], **lora))
        elif hp["kind"] == "linear" and type(have).__name__ != "LoRALinear":
            parent.add_module(name, LoRALinear(hp["in_features"], hp["out_features"], have.bias is not None, **lora))
        elif hp["kind"] == "conv1d" and type(have).__name__ != "LoRAConv1D":
            parent.add_module(name, LoRAConv1D(hp["out_features"], hp["in_features"], **lora))


def tie_weights(model: nn.Module) -> None:
    """Share the tensors the captured model shares (TIED: name -> the name it is saved under)."""
    for name, source in TIED.items():
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, model.get_parameter(source))


def load_model(folder: str = ".", device: str = "cpu") -> nn.Module:
    """The model on `device` with the weights of `folder`/model.safetensors (every tensor it needs must be there)."""
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path, device=str(device))
    with torch.device("meta"):
        model = Model()
    missing = [k for k in model.state_dict() if k not in tensors and k not in TIED]
    if missing:
        raise ValueError(f"{path} has no tensor {missing[0]!r} ({len(missing)} missing), which model.py needs; "
                         "export the folder again.")
    model.load_state_dict({k: v for k, v in tensors.items() if k not in TIED}, strict=False, assign=True)
    tie_weights(model)
    return model
