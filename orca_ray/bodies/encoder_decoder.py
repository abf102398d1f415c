"""Encoder-decoder bodies: T5 (t5-small, t5-base, flan-t5-base) and BART (bart-base), in two uses named apart.

    load_body("t5-base-encoder")           # the encoder stack alone (also "encoder:<hub id or folder>")
    load_body("t5-base")                   # the whole model: embedded tokens into the encoder; the decoder
                                           # attends to them from a short learned query sequence and the
                                           # predictor reads the decoder's output (QUERY_TOKENS tokens)
    load_body("random:bart-base")          # the published config, fresh weights, offline

What the embedder starts from: T5 has neither an embedding LayerNorm nor absolute positions (its positions are a
relative bias inside attention): the embedder's LayerNorm starts from weight 1 / bias 0 and its positions at zero.
BART's encoder has learned absolute positions and an embedding LayerNorm: the embedder starts from both (as
for RoBERTa) and the encoder's own stop being applied. The decoder keeps its own positions; its queries start as
copies of the word embedding of the decoder's start token (what the pretrained decoder first reads) and train
with the body.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Body, EmbeddingInit, ZeroPositions, identity_norm_init
from .decoders import MINI
from .registry import ENCODER_USE, Family, register_alias, register_family

QUERY_TOKENS = 8  # the decoder's learned query sequence (whole-model use)
T5_MAX_TOKENS = 512  # T5's pretraining length (its relative positions have no table to bound them)
BART_POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding's first real position

_T5_BASE = {"model_type": "t5", "d_model": 768, "d_ff": 3072, "num_layers": 12, "num_heads": 12}
_FLAN_T5_BASE = {
    "model_type": "t5",
    "d_model": 768,
    "d_ff": 2048,
    "num_layers": 12,
    "num_heads": 12,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}
_BART_BASE = {
    "model_type": "bart",
    "d_model": 768,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
}
_TINY_T5 = {
    "model_type": "t5",
    "vocab_size": 128,
    "d_model": 32,
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 2,
    "relative_attention_num_buckets": 8,
}
_TINY_BART = {
    "model_type": "bart",
    "vocab_size": 128,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 128,
}
_MINI_T5 = {
    "model_type": "t5",
    "d_model": MINI["width"],
    "d_kv": MINI["width"] // MINI["heads"],
    "d_ff": 4 * MINI["width"],
    "num_layers": MINI["layers"],
    "num_heads": MINI["heads"],
}
_MINI_BART = {
    "model_type": "bart",
    "d_model": MINI["width"],
    "encoder_layers": MINI["layers"],
    "decoder_layers": MINI["layers"],
    "encoder_attention_heads": MINI["heads"],
    "decoder_attention_heads": MINI["heads"],
    "encoder_ffn_dim": 4 * MINI["width"],
    "decoder_ffn_dim": 4 * MINI["width"],
}
# T5 v1.0 saw 2^35 tokens of C4 (524,288 steps × 128 sequences × 512 tokens); flan-t5 and BART: not stated
for _alias, _hub, _tokens, _config in (
    ("t5-small", "google-t5/t5-small", 2.0**35, {"model_type": "t5"}),  # T5Config() is t5-small
    ("t5-base", "google-t5/t5-base", 2.0**35, _T5_BASE),
    ("flan-t5-base", "google/flan-t5-base", None, _FLAN_T5_BASE),
    ("bart-base", "facebook/bart-base", None, _BART_BASE),
    ("mini-t5", None, None, _MINI_T5),
    ("mini-bart", None, None, _MINI_BART),
    ("tiny-t5", None, None, _TINY_T5),
    ("tiny-bart", None, None, _TINY_BART),
):
    register_alias(_alias, _hub, tokens=_tokens, config=_config)
    register_alias(f"{_alias}-encoder", _hub, tokens=_tokens, config=_config, use=ENCODER_USE)


class EncoderDecoderBody(Body):
    """A T5 or BART model fed with embedded tokens: the encoder stack alone (`use="encoder"`), or the whole model
    whose decoder reads the encoder's output from QUERY_TOKENS learned queries.

    Args:
        model: the transformers T5Model / BartModel (its word embeddings are dropped).
        name: the body's name as given.
        pretraining_tokens: tokens behind the weights (0 = random init, None = unknown).
        use: "encoder" or "" (the whole model).
        embedding_init: what the embedder starts from (see the module docstring).
        max_tokens: the most input tokens.
    """

    modality = "1d"
    takes_2d_tasks = False

    def __init__(
        self,
        model: nn.Module,
        name: str,
        pretraining_tokens: float | None,
        use: str,
        embedding_init: EmbeddingInit,
        max_tokens: int,
    ):
        super().__init__()
        cfg = model.config
        words = model.get_input_embeddings()
        self.whole = use != ENCODER_USE
        if self.whole:
            # T5's decoder starts from its pad token (its config names no decoder_start_token_id), BART's from </s>
            start_id = getattr(cfg, "decoder_start_token_id", None)
            start = words.weight.detach()[cfg.pad_token_id if start_id is None else start_id]
            self.queries = nn.Parameter(start.repeat(QUERY_TOKENS, 1).clone())
            self.keeps_token_grid = False  # the output is the queries', one per query
        model.decoder = model.decoder if self.whole else None
        model.shared = model.encoder.embed_tokens = None  # the embedder replaces the word embeddings
        if self.whole:
            model.decoder.embed_tokens = None
        self.model = model
        self.embedding_init = embedding_init
        self.name = name
        self.pretraining_tokens = pretraining_tokens
        self.embed_dim = self.out_dim = cfg.d_model
        self.max_tokens = max_tokens

    def forward(self, tokens, grid):
        enc = self.model.encoder(inputs_embeds=tokens, return_dict=True).last_hidden_state
        if not self.whole:
            return enc, grid
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        dec = self.model.decoder(
            inputs_embeds=queries, encoder_hidden_states=enc, use_cache=False, return_dict=True
        ).last_hidden_state
        return dec, (QUERY_TOKENS,)


@register_family
class T5(Family):
    """T5 and flan-T5: relative position bias, RMS LayerNorm inside the blocks only."""

    name = "t5"
    model_types = ("t5",)
    takes_2d_tasks = False
    dropout_keys = ("dropout_rate",)

    def wrap(self, model, name, pretraining_tokens, use=""):
        init = identity_norm_init(model.config.d_model, torch.zeros(T5_MAX_TOKENS, model.config.d_model))
        return EncoderDecoderBody(model, name, pretraining_tokens, use, init, T5_MAX_TOKENS)

    def text_embeddings(self, model):
        return _Words(model.get_input_embeddings())

    def text_length(self, config) -> int:
        return T5_MAX_TOKENS


@register_family
class Bart(Family):
    """BART: learned absolute positions (offset 2) and an embedding LayerNorm in each stack."""

    name = "bart"
    model_types = ("bart",)
    takes_2d_tasks = False
    dropout_keys = ("dropout", "attention_dropout", "activation_dropout")

    def wrap(self, model, name, pretraining_tokens, use=""):
        enc = model.encoder
        init = EmbeddingInit(
            norm_weight=enc.layernorm_embedding.weight.detach().clone(),
            norm_bias=enc.layernorm_embedding.bias.detach().clone(),
            positions=enc.embed_positions.weight.detach()[BART_POSITION_OFFSET:].clone(),
        )
        enc.embed_positions = ZeroPositions(model.config.d_model)
        enc.layernorm_embedding = nn.Identity()
        return EncoderDecoderBody(
            model, name, pretraining_tokens, use, init, model.config.max_position_embeddings
        )

    def text_embeddings(self, model):
        return _BartEncoderEmbeddings(model.encoder)

    def tokenizer_kwargs(self) -> dict:
        return {"add_prefix_space": True}  # byte-level BPE takes pre-split words only with it


class _Words(nn.Module):
    """input_ids → word embeddings (T5: its only input embedding)."""

    def __init__(self, words: nn.Embedding):
        super().__init__()
        self.words, self.vocab_size = words, words.num_embeddings

    def forward(self, input_ids):
        return self.words(input_ids)


class _BartEncoderEmbeddings(nn.Module):
    """input_ids → BART's encoder input: LayerNorm(scaled word embeddings + learned positions)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, self.vocab_size = encoder, encoder.embed_tokens.num_embeddings

    def forward(self, input_ids):
        enc = self.encoder
        return enc.layernorm_embedding(enc.embed_tokens(input_ids) + enc.embed_positions(input_ids))
