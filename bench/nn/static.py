"""Whether a training step keeps its shapes static.

On an accelerator a data-dependent shape (boolean selection, torch.unique, int(tensor)) makes the
host wait for the device at every step, and torch.compile / CUDA graphs cannot capture it. On
CPU there is no device to wait for and selecting only the real positions is the cheaper form, so
CPU keeps it: every CPU record was made with it and stays reproducible.
"""

from __future__ import annotations

import torch

# True: CPU takes the accelerator's static form too (tests count its host reads on CPU)
STATIC_ON_CPU = False


def shape_static(t: torch.Tensor) -> bool:
    return t.device.type != "cpu" or STATIC_ON_CPU or torch.compiler.is_compiling()
