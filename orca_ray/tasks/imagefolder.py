"""Images in torchvision's ImageFolder layout: `load_task("imagefolder:/data/pets")`.

    DIR/train/<class>/*.png|jpg|jpeg|bmp|gif|tif|tiff|webp
    DIR/test/<class>/...
    DIR/val/<class>/...        optional; else validation is carved from train with the seed

Class names are the folder names of `train/` (ordered numerically when they are all numbers, else as text);
a class folder under test/ or val/ that train/ lacks is an error. Images are read with PIL (no pickles), as
PNG, JPEG, BMP, GIF, TIFF or WebP judged by content (any other format is refused, whatever the file's suffix),
and an image declaring more than `MAX_PIXELS` is refused before it is decoded. All
greyscale → 1 channel, else RGB (alpha dropped). Images of different sizes are resized (bilinear) to the most
common training size; any side above `max_side` is scaled down, keeping the aspect ratio. Pixels are scaled to
[0, 1] and standardised per channel with training statistics.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from . import register_task
from .base import Split, Task, TaskDataError, carve_validation
from .labels import LabelCoding

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# what PIL may open, judged by content: a PostScript or PPM file named .png is refused, never handed to
# another decoder (PIL's EPS plugin runs Ghostscript)
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
MAX_SIDE = 224  # the 2D bodies' input size; larger images are scaled down on load
# an image declaring more pixels than this (a 64 MP photo) is refused before it is decoded: a few kilobytes of
# PNG can declare gigabytes of pixels
MAX_PIXELS = 64_000_000


def list_images(folder: Path, split: str) -> list[tuple[Path, str]]:
    """(image file, class folder name) of one split, sorted.

    Args:
        folder: the data set's root.
        split: "train", "val" or "test".
    """
    root = folder / split
    if not root.is_dir():
        hint = (
            " (there is a val/ folder: to score on it, rename it test/)" if (folder / "val").is_dir() else ""
        )
        raise TaskDataError(
            f"{root}: missing. The imagefolder layout is DIR/train/<class>/*.png and DIR/test/<class>/*.png "
            f"(DIR/val/ optional){hint}"
        )
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise TaskDataError(f"{root}: no class folders; put each class's images in {root}/<class>/")
    out = []
    for d in classes:
        files = sorted(  # any depth below the class folder, as torchvision's ImageFolder
            f
            for f in d.rglob("*")
            if f.suffix.lower() in IMAGE_SUFFIXES
            and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(d).parts)
        )
        if not files and split == "train":
            raise TaskDataError(
                f"{d}: class folder without images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        out += [(f, d.name) for f in files]
    if not out:
        raise TaskDataError(f"{root}: no images in any class folder")
    return out


def _open(path: Path, decode: bool = True):
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path, formats=PIL_FORMATS)
            w, h = img.size
            if w * h > MAX_PIXELS:
                img.close()
                raise TaskDataError(
                    f"{path}: declares {w}x{h} pixels, more than {MAX_PIXELS:,}; refusing to decode it "
                    f"(a decompression bomb, or a photo to scale down before use)"
                )
            if decode:
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TaskDataError(
            f"{path}: declares more pixels than PIL decodes safely ({e}); refusing it (a decompression bomb?)"
        ) from None
    except UnidentifiedImageError:
        raise TaskDataError(
            f"{path}: not a readable image (its content is none of {', '.join(PIL_FORMATS).lower()}); "
            "delete or replace it"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        if isinstance(e, TaskDataError):
            raise
        raise TaskDataError(
            f"{path}: not a readable image ({' '.join(str(e).split())[:200]}); delete or replace it"
        ) from None
    return img


def _target_size(sizes: Counter, max_side: int) -> tuple[int, int]:
    w, h = sizes.most_common(1)[0][0]
    scale = min(1.0, max_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _read(items: list[tuple[Path, str]], size: tuple[int, int], mode: str) -> tuple[np.ndarray, int]:
    from PIL import Image

    c = 1 if mode == "L" else 3
    x = np.empty((len(items), c, size[1], size[0]), dtype=np.uint8)
    resized = 0
    for i, (path, _) in enumerate(items):
        img = _open(path).convert(mode)
        if img.size != size:
            img = img.resize(size, Image.BILINEAR)
            resized += 1
        a = np.asarray(img, dtype=np.uint8)
        x[i] = a[None] if c == 1 else a.transpose(2, 0, 1)
    return x, resized


@register_task(
    "imagefolder",
    modality="2d",
    description="images: imagefolder:DIR with DIR/train/<class>/*.png|jpg and DIR/test/... (val/ optional)",
)
def load_imagefolder_task(
    path: str, data_root=None, seed: int = 0, val_fraction: float = 0.1, max_side: int = MAX_SIDE
) -> Task:
    """An image classification task from class folders (see the module docstring).

    Args:
        path: the data set's root folder (holding train/ and test/).
        data_root: unused (the path is the data).
        seed: seeds the validation carve.
        val_fraction: share of the training images carved off for validation when there is no val/.
        max_side: images are scaled down so no side exceeds this.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise TaskDataError(f"{folder}: no such folder. Give 'imagefolder:DIR' with DIR/train/<class>/*.png")
    splits = {"train": list_images(folder, "train"), "test": list_images(folder, "test")}
    if (folder / "val").is_dir():
        splits["val"] = list_images(folder, "val")
    # greyscale only when every training image is; modes and sizes from the headers (PIL decodes lazily)
    modes, sizes = Counter(), Counter()
    for p, _ in splits["train"]:
        with _open(p, decode=False) as img:
            modes[img.mode] += 1
            sizes[img.size] += 1
    mode = "L" if set(modes) <= {"L", "1", "I", "I;16", "F", "LA"} else "RGB"
    size = _target_size(sizes, max_side)
    coding = LabelCoding.fit(
        np.array([c for _, c in splits["train"]], dtype=str), where=f"{folder / 'train'}: class folders"
    )
    arrays, resized = {}, 0
    for split, items in splits.items():
        y = coding.encode(
            np.array([c for _, c in items], dtype=str), where=f"{folder / split}: class folders"
        )
        x, r = _read(items, size, mode)
        arrays[split] = (x, y)
        resized += r
    x_tr = arrays["train"][0].astype(np.float32) / 255.0
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def norm(x):
        return ((x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    train = Split(norm(arrays["train"][0]), arrays["train"][1])
    if "val" in arrays:
        val = Split(norm(arrays["val"][0]), arrays["val"][1])
    else:
        train, val = carve_validation(train, val_fraction, seed, source=str(folder / "train"))
    notes = {"resized": f"{resized} images resized to {size[0]}x{size[1]}"} if resized else {}
    return Task(
        name=f"imagefolder:{folder.name}",
        modality="2d",
        kind="classification",
        input_shape=(1 if mode == "L" else 3, size[1], size[0]),
        num_outputs=coding.num_classes,
        class_names=coding.names,
        train=train,
        val=val,
        test=Split(norm(arrays["test"][0]), arrays["test"][1]),
        source=str(folder),
        notes=notes,
        files=tuple(str(p) for items in splits.values() for p, _ in items),
    )
