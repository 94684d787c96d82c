"""Mixed precision, stated by the protocol (`train.precision`) and recorded with the run.

`fp32` changes nothing. `bf16` autocasts forward passes to bfloat16 (CUDA and CPU; no loss scaling
needed thanks to its float32 exponent range). `fp16` autocasts to float16 with a GradScaler and needs
CUDA. Penalties that differentiate the discriminator's output w.r.t. its input (gradient penalty, R1)
are computed outside autocast, in float32, so scaling never touches their inner gradients.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, kind: str = "fp32", device_type: str = "cpu"):
        if kind == "fp16" and device_type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
        self.kind = kind
        self.device_type = device_type
        self.scaler = torch.amp.GradScaler(device_type) if kind == "fp16" else None

    def autocast(self):
        if self.kind == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.kind])

    def off(self):
        """Leave autocast for a float32 island (backward, penalties)."""
        if self.kind == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, enabled=False)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
