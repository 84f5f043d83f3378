

def load_model(folder: str = ".", device: str = "cpu") -> Model:
    """Build the model from `folder`/model.safetensors on `device`."""
    tensors = load_file(os.path.join(folder, "model.safetensors"), device=str(device))
    return Model(tensors)
