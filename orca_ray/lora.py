"""LoRA adapters in a body's attention, with `peft`, so that fine-tuning changes a limited number of parameters.

    targets = lora_targets(body)                        # ("query", "value") for a BERT/RoBERTa/MiniLM body
    apply_lora(model.body, rank=4, alpha=16, dropout=0.0, seed=0)   # in place: base weights frozen

The adapters are injected into the body in place (`peft.inject_adapter_in_model`): the Body stays a Body, the
embedder and predictor around it are untouched, and the base weights stay bit-identical (LoRA's B starts at
zero, so the model computes what it did until refine moves the adapters). The target modules are found by
name, one family at a time (`LORA_FAMILIES`): the first family all of whose names are linear layers of the
body wins, so any body of those families works without a table entry of its own.
"""

from __future__ import annotations

import torch
from torch import nn

# (family, the leaf module names LoRA adapts): attention query and value, or the fused projection holding them
LORA_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HF BERT / RoBERTa / MiniLM, HF Swin before transformers 5", ("query", "value")),
    ("BART / OPT / Llama-style, HF Swin from transformers 5", ("q_proj", "v_proj")),
    ("T5", ("q", "v")),
    ("GPT-NeoX / Pythia", ("query_key_value",)),
    ("GPT-2", ("c_attn",)),
    ("timm Swin / ViT", ("qkv",)),
)


class LoRATargetError(ValueError):
    """The body has no module LoRA knows how to adapt."""


def _linear_leaves(body: nn.Module) -> dict[str, nn.Module]:
    from transformers.pytorch_utils import Conv1D  # GPT-2's transposed linear layer

    return {n: m for n, m in body.named_modules() if isinstance(m, nn.Linear | Conv1D)}


def lora_targets(body: nn.Module) -> tuple[str, ...]:
    """The leaf names LoRA adapts in `body`: those of the first family in `LORA_FAMILIES` that it has.

    Args:
        body: a body (or any module holding a transformer).

    Raises:
        LoRATargetError: naming the names looked for.
    """
    leaves = {n.rsplit(".", 1)[-1] for n in _linear_leaves(body)}
    for _, names in LORA_FAMILIES:
        if set(names) <= leaves:
            return names
    looked = ", ".join("/".join(names) for _, names in LORA_FAMILIES)
    raise LoRATargetError(
        f"body {getattr(body, 'name', type(body).__name__)!r} has no attention layers LoRA can target "
        f"(looked for linear layers named {looked}); use --lora-rank 0 or another body"
    )


def max_lora_rank(body: nn.Module) -> int:
    """The largest sensible rank: the narrowest side of any targeted layer (a higher rank adds nothing).

    Args:
        body: the body.
    """
    names = set(lora_targets(body))
    sides = []
    for n, m in _linear_leaves(body).items():
        if n.rsplit(".", 1)[-1] in names:
            w = m.weight
            sides.append(min(w.shape[0], w.shape[1]))
    return min(sides)


def apply_lora(body: nn.Module, *, rank: int, alpha: float, dropout: float, seed: int) -> tuple[str, ...]:
    """Inject rank-`rank` LoRA adapters into `body`'s attention in place; afterwards only the adapters of the
    body require grad (its base weights are frozen). The adapters' own init draws from `seed` without
    touching the global random stream.

    Args:
        body: the body, changed in place.
        rank: r >= 1, at most `max_lora_rank(body)`.
        alpha: LoRA's alpha (the update is scaled by alpha / r).
        dropout: dropout on the adapters' input.
        seed: seeds the adapters' init.

    Returns:
        The targeted leaf names.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from transformers.pytorch_utils import Conv1D

    names = lora_targets(body)
    limit = max_lora_rank(body)
    if not 1 <= rank <= limit:
        raise ValueError(f"lora_rank must be in 1..{limit} (the narrowest targeted layer), got {rank}")
    fan_in_fan_out = any(
        isinstance(m, Conv1D) for n, m in _linear_leaves(body).items() if n.rsplit(".", 1)[-1] in names
    )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(names),
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, body)
    for n, p in body.named_parameters():
        p.requires_grad_(is_lora_parameter(n))
    return names


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter (peft names them lora_A / lora_B).

    Args:
        name: a dotted parameter name.
    """
    return ".lora_A." in name or ".lora_B." in name


def base_name(name: str) -> str:
    """The name a base weight had before LoRA wrapped its layer (peft moves it under `base_layer`).

    Args:
        name: a dotted parameter name of the wrapped body.
    """
    return name.replace(".base_layer.", ".")
