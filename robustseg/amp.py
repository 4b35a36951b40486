"""Mixed precision, shared by the attacks (attacks/objectives.py) and training (training/): one table of the
``--amp`` names and one fp16 loss scale, so the two sides cannot drift apart."""
from __future__ import annotations

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# fp16 input gradients of a loss ~1 underflow to zero; sign and normalised steps do not depend on the scale
FP16_LOSS_SCALE = 1024.0
