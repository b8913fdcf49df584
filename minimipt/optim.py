"""Optimizer parameter groups: what gets weight decay and what does not.

Rule (as nanoGPT): every parameter with two or more dimensions (linear weights, embeddings) is
decayed; vectors and scalars (biases, LayerNorm gains, the MIPT gate/phase constants such as a
static ``θ``) are not — decaying them would pull the gate towards ``p = 1/2`` and the phases to 0.
"""

from __future__ import annotations

import torch.nn as nn

__all__ = ["param_groups", "count_parameters"]


def param_groups(model: nn.Module, weight_decay: float, verbose: bool = True) -> list[dict]:
    """Two AdamW groups: ``[{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0}]``.

    Tied parameters appear once. With ``verbose`` the split is printed (once per call).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay, no_decay, names_nd = [], [], []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.dim() >= 2:
            decay.append(param)
        else:
            no_decay.append(param)
            names_nd.append(name)
    if verbose:
        n_d = sum(p.numel() for p in decay)
        n_nd = sum(p.numel() for p in no_decay)
        print(f"param_groups: weight decay {weight_decay} on {len(decay)} tensors ({n_d:,} values); "
              f"none on {len(no_decay)} tensors ({n_nd:,} values: biases, norms, gate/phase constants)")
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def count_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Number of distinct trainable parameters; ``embeddings=False`` leaves out ``nn.Embedding``
    weights (a weight tied to an embedding, such as an LM head, is left out with it)."""
    skip: set[int] = set()
    if not embeddings:
        skip = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen and id(p) not in skip:
            seen.add(id(p))
            total += p.numel()
    return total
