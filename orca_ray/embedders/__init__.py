"""Stage one's embedder kinds, one registry as the door (name → builder):

    emb = build_embedder(task, body, aligned=True)                  # "orca": ORCA's embedder
    emb = build_embedder(task, body, aligned=True, kind="linear")   # each patch → one Linear, nothing else
    EMBEDDERS                                                       # {"orca": ..., "linear": ..., ...}

| kind | patch projection | LayerNorm | our learned positions |
|---|---|---|---|
| `orca` | conv, kernel = stride | yes | yes (1D; 2D on a text body) |
| `orca-no-norm` | conv | no | yes |
| `orca-no-pos` | conv | yes | no |
| `linear` | Linear on the flattened patch | no | no |

Every kind uses ORCA's patching (`patching_for`), so the token grid (and the dense predictor's upscale) is the
same whatever the kind, and starts from the body's embedding as ORCA's embedder_init does for the parts it
has. Swin bodies have no positions of ours (their relative position bias is the body's): there `orca-no-pos`
is `orca`. A new kind: `@register_embedder("name")` on a `builder(patching, embed_dim) -> nn.Module` whose
module has `patching`, `init_from_body(init, aligned)` and `forward(x) -> (tokens, grid)`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from ..bodies import Body
from .linear import LinearEmbedder
from .orca import Embedder1D, Embedder2D, orca_embedder
from .patching import Patching, patching_for, stride_for

DEFAULT_EMBEDDER = "orca"
Builder = Callable[[Patching, int], nn.Module]
EMBEDDERS: dict[str, Builder] = {}


def register_embedder(name: str) -> Callable[[Builder], Builder]:
    """Decorator: add a builder to the registry under `name`.

    Args:
        name: the kind's name (what `TrialConfig.embedder` and `--embedders` take).
    """

    def add(builder: Builder) -> Builder:
        if name in EMBEDDERS:
            raise ValueError(f"embedder kind {name!r} is registered twice")
        EMBEDDERS[name] = builder
        return builder

    return add


register_embedder("orca")(orca_embedder)
register_embedder("orca-no-norm")(partial(orca_embedder, norm=False))
register_embedder("orca-no-pos")(partial(orca_embedder, positions=False))
register_embedder("linear")(LinearEmbedder)


def check_embedder_kind(kind: str) -> str:
    """`kind` when it is registered, else a ValueError naming the known kinds.

    Args:
        kind: an embedder kind's name.
    """
    if kind not in EMBEDDERS:
        raise ValueError(f"unknown embedder kind {kind!r}; known: {', '.join(EMBEDDERS)}")
    return kind


def build_embedder(
    task, body: Body, *, aligned: bool, target_seq_len: int | None = None, kind: str = DEFAULT_EMBEDDER
) -> nn.Module:
    """The embedder of `kind` for a task's input shape and a body, initialised from the body as ORCA does.

    Args:
        task: anything with name, modality, input_shape (a Task).
        body: the body the embedder feeds.
        aligned: True when the embedder will be aligned (> 0 embedder epochs): ORCA then starts it from the
            body's embedding; False gives ORCA's fresh init.
        target_seq_len: 1D token budget (ORCA's target_seq_len); default 64.
        kind: a registered embedder kind (`EMBEDDERS`).
    """
    builder = EMBEDDERS[check_embedder_kind(kind)]
    emb = builder(patching_for(task, body, target_seq_len), body.embed_dim)
    emb.init_from_body(body.embedding_init, aligned)
    return emb


__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "Embedder1D",
    "Embedder2D",
    "LinearEmbedder",
    "Patching",
    "build_embedder",
    "check_embedder_kind",
    "patching_for",
    "register_embedder",
    "stride_for",
]
