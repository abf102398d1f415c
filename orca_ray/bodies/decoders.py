"""Decoder-only bodies: GPT-2, Pythia (GPT-NeoX) and any causal LM, its base model without the LM head.

    load_body("gpt2")                      # openai-community/gpt2 (also distilgpt2, gpt2-medium)
    load_body("pythia-160m@step1000")      # EleutherAI/pythia-160m at revision step1000 (2.1B tokens)
    load_body("random:pythia-410m")        # the published config, fresh weights, offline
    load_body("/models/my-causal-lm")      # any folder of a *ForCausalLM: its base model

Attention stays causal (the token at position t sees tokens 0..t only): that is what this family tests. The word
embeddings are dropped (the embedder replaces them). What the embedder starts from, by family:
GPT-2 has learned absolute positions (wpe) and no embedding LayerNorm: the embedder's positions start from wpe
(and the body's own wpe stops adding), its LayerNorm from weight 1 / bias 0. Pythia's positions are rotary,
inside attention, and it has no embedding LayerNorm: the embedder's positions start at zero, its LayerNorm from
1 / 0. Other causal LMs keep whatever positions they add themselves; the embedder starts as for Pythia.
"""

from __future__ import annotations

import contextlib
import re

import torch
from torch import nn

from .base import Body, ZeroPositions, identity_norm_init
from .registry import BodyName, Family, register_alias, register_family

# Pythia's intermediate checkpoints: revision "stepN" after N steps of 1,024 sequences × 2,048 tokens
PYTHIA_TOKENS_PER_STEP = 2_097_152
PYTHIA_FINAL_STEP = 143_000
_GPT2_DROPOUT = ("resid_pdrop", "embd_pdrop", "attn_pdrop")
_NEOX_DROPOUT = ("attention_dropout", "hidden_dropout")

register_alias("gpt2", "openai-community/gpt2", config={"model_type": "gpt2"})  # GPT2Config() is gpt2
register_alias("distilgpt2", "distilbert/distilgpt2", config={"model_type": "gpt2", "n_layer": 6})
register_alias(
    "gpt2-medium",
    "openai-community/gpt2-medium",
    config={"model_type": "gpt2", "n_embd": 1024, "n_layer": 24, "n_head": 16},
)
register_alias(
    "tiny-gpt2",
    None,
    config={
        "model_type": "gpt2",
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
        "n_positions": 128,
        "vocab_size": 128,
    },
)
# GPTNeoXConfig()'s defaults are the 20B model: the sizes below are Pythia's published config.json files
_PYTHIA = {
    "model_type": "gpt_neox",
    "vocab_size": 50304,
    "max_position_embeddings": 2048,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
for _size, (_d, _layers, _heads) in {
    "70m": (512, 6, 8),
    "160m": (768, 12, 12),
    "410m": (1024, 24, 16),
}.items():
    register_alias(
        f"pythia-{_size}",
        f"EleutherAI/pythia-{_size}",
        tokens=PYTHIA_FINAL_STEP * PYTHIA_TOKENS_PER_STEP,
        config={
            **_PYTHIA,
            "hidden_size": _d,
            "num_hidden_layers": _layers,
            "num_attention_heads": _heads,
            "intermediate_size": 4 * _d,
        },
    )
# the demo's random members: MiniLM's width (384) at 4 layers, the family's own vocabulary (random init only)
MINI = {"width": 384, "layers": 4, "heads": 6}
register_alias(
    "mini-gpt2",
    None,
    config={
        "model_type": "gpt2",
        "n_embd": MINI["width"],
        "n_layer": MINI["layers"],
        "n_head": MINI["heads"],
    },
)
register_alias(
    "mini-pythia",
    None,
    config={
        **_PYTHIA,
        "hidden_size": MINI["width"],
        "num_hidden_layers": MINI["layers"],
        "num_attention_heads": MINI["heads"],
        "intermediate_size": 4 * MINI["width"],
    },
)
register_alias(
    "tiny-pythia",
    None,
    config={
        **_PYTHIA,
        "vocab_size": 128,
        "max_position_embeddings": 128,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
)


class DecoderBody(Body):
    """A causal LM's base model called with `inputs_embeds`; its word embeddings dropped and, where it has a
    learned absolute position table, that table moved into the embedder's init.

    Args:
        model: the transformers base model (GPT2Model, GPTNeoXModel, ...).
        name: the body's name as given.
        pretraining_tokens: tokens behind the weights (0 = random init, None = unknown).
        positions: the attribute of `model` holding its learned absolute positions (GPT-2: "wpe"), or None
            when its positions live inside attention (rotary) or cannot be taken out.
    """

    modality = "1d"
    causal = True
    takes_2d_tasks = False

    def __init__(self, model: nn.Module, name: str, pretraining_tokens: float | None, positions: str | None):
        super().__init__()
        cfg = model.config
        dim = cfg.hidden_size
        self.max_tokens = getattr(cfg, "max_position_embeddings", None)
        if positions is not None:
            table = getattr(model, positions).weight.detach().clone()
            setattr(model, positions, ZeroPositions(dim))
        else:
            table = torch.zeros(self.max_tokens or 2048, dim)
        self.embedding_init = identity_norm_init(dim, table)
        # the embedder replaces the word embeddings; a model that cannot drop them keeps an unused table
        with contextlib.suppress(NotImplementedError, AttributeError):
            model.set_input_embeddings(None)
        self.model = model
        self.name = name
        self.pretraining_tokens = pretraining_tokens
        self.embed_dim = self.out_dim = dim

    def forward(self, tokens, grid):
        out = self.model(inputs_embeds=tokens, use_cache=False, return_dict=True)
        return out.last_hidden_state, grid


class _WordAndPositions(nn.Module):
    """input_ids → word embeddings (+ learned absolute positions when the model has them)."""

    def __init__(self, words: nn.Embedding, positions: nn.Embedding | None = None):
        super().__init__()
        self.words, self.positions = words, positions
        self.vocab_size = words.num_embeddings

    def forward(self, input_ids):
        x = self.words(input_ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(input_ids.shape[1], device=input_ids.device))
        return x


class _Decoders(Family):
    positions: str | None = None
    takes_2d_tasks = False

    def wrap(self, model, name, pretraining_tokens, use=""):
        return DecoderBody(model, name, pretraining_tokens, self.positions)

    def text_embeddings(self, model):
        return _WordAndPositions(model.get_input_embeddings(), getattr(model, self.positions or "", None))

    def tokenizer_kwargs(self) -> dict:
        return {"add_prefix_space": True}  # byte-level BPE takes pre-split words only with it


@register_family
class GPT2(_Decoders):
    """GPT-2 (gpt2, distilgpt2, gpt2-medium): learned absolute positions, no embedding LayerNorm."""

    name = "gpt2"
    model_types = ("gpt2",)
    positions = "wpe"
    dropout_keys = _GPT2_DROPOUT


@register_family
class Pythia(_Decoders):
    """Pythia (GPT-NeoX): rotary positions, no embedding LayerNorm; `@stepN` names an intermediate checkpoint."""

    name = "pythia"
    model_types = ("gpt_neox",)
    dropout_keys = _NEOX_DROPOUT

    def revision_tokens(self, spec: BodyName) -> float | None:
        step = re.fullmatch(r"step(\d+)", spec.revision or "")
        if step is None or "pythia" not in spec.base.lower():
            return None
        return float(int(step.group(1)) * PYTHIA_TOKENS_PER_STEP)


@register_family
class CausalLM(_Decoders):
    """Any other causal LM (its config's architectures name a *ForCausalLM / *LMHeadModel): the base model, its
    own positions kept."""

    name = "causal-lm"
    dropout_keys = (*_GPT2_DROPOUT, *_NEOX_DROPOUT, "dropout", "attention_dropout")

    def accepts(self, config) -> bool:
        archs = getattr(config, "architectures", None) or []
        return not getattr(config, "is_encoder_decoder", False) and any(
            a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs
        )
