"""Parameter budget (as PEFT's print_trainable_parameters counts it) and a training-memory estimate."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Budget:
    """Trainable (LoRA) and total parameters, and the bytes training them needs."""

    trainable: int  # LoRA A and B parameters
    total: int  # every parameter of the edited model, each shared tensor once (LoRA included)
    frozen_bytes: int  # base weights, not trained
    lora_bytes: int  # LoRA weights
    grad_bytes: int  # gradients of the LoRA weights
    adam_bytes: int  # AdamW's two moment estimates per LoRA weight, fp32

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    @property
    def memory_bytes(self) -> int:
        """Weights + gradients + optimizer states (activations depend on batch and seq and are not included)."""
        return self.frozen_bytes + self.lora_bytes + self.grad_bytes + self.adam_bytes

    @property
    def text(self) -> str:
        """PEFT's line: 'trainable params: 294,912 || all params: 109,777,152 || trainable%: 0.2686'."""
        return f"trainable params: {self.trainable:,d} || all params: {self.total:,d} || trainable%: {self.percent:.4f}"

    def as_dict(self) -> dict:
        return {**asdict(self), "percent": self.percent, "memory_bytes": self.memory_bytes}


def budget(cm) -> Budget:
    """The budget of `cm` with its current LoRA blocks."""
    lora_modules = {b.module_path + "." for b in cm.loras.values()}
    trainable = frozen_bytes = lora_bytes = total = 0
    for name, p in cm.gm.named_parameters():
        n = p.numel()
        total += n
        if any(name.startswith(m) for m in lora_modules):
            trainable += n
            lora_bytes += n * p.element_size()
        else:
            frozen_bytes += n * p.element_size()
    for _, b in cm.gm.named_buffers():
        frozen_bytes += b.numel() * b.element_size()
    grad_bytes = lora_bytes
    return Budget(trainable, total, frozen_bytes, lora_bytes, grad_bytes, adam_bytes=2 * 4 * trainable)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
