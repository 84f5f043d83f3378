

def load_model(folder: str = ".", device: str = "cpu") -> Model:
    """Build the model from `folder`/model.safetensors on `device` (WeightsError: one sentence on what is wrong)."""
    return Model(read_weights(os.path.join(folder, "model.safetensors"), EXPECTED, device))
