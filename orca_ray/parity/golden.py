"""A golden folder (`Golden`: manifest, cases, the seeded bodies as loadable folders) and a golden case built
as our objects: the body, the task as our builders read it, the model with the case's seeded weights."""

from __future__ import annotations

import functools
import inspect
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..parity_spec import read_manifest, seeded_tensors, tensors_sha256
from .table import Missing

DEFAULT_GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "data" / "orca_parity"
TASK_MODALITY = {
    "cifar100": "2d",
    "ninapro": "2d",
    "darcy": "2d",
    "satellite": "1d",
    "deepsea": "1d",
    "ecg": "1d",
}


class Golden:
    """A golden folder: manifest, cases, and the seeded bodies written out as loadable folders.

    Args:
        root: the folder holding manifest.json (`parity_spec.MANIFEST`) and the cases' .npz files.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.seed = int(self.manifest["seed"])
        self._tmp = None
        self._tensors: dict[str, dict[str, np.ndarray]] = {}

    def cases(self, kind: str | None = None) -> list[tuple[str, dict]]:
        """(name, case) for every case in the manifest, in its order.

        Args:
            kind: only cases of this kind (a key of `CHECKS`); None: all.
        """
        return [(n, c) for n, c in self.manifest["cases"].items() if kind is None or c["kind"] == kind]

    def arrays(self, case: dict) -> dict[str, np.ndarray]:
        """A case's arrays (float16 stored ones as float32), read without pickle.

        Args:
            case: the case's manifest entry.
        """
        with np.load(self.root / case["file"], allow_pickle=False) as z:
            return {k: (z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k]) for k in z.files}

    def body_tensors(self, name: str) -> dict[str, np.ndarray]:
        """The seeded weights of body `name`, checked against the SHA-256 the maker recorded.

        Args:
            name: the body's key in the manifest ("roberta", "swin").
        """
        if name not in self._tensors:
            spec = self.manifest["bodies"][name]
            tensors = seeded_tensors(self.seed, spec["tensors"])
            if tensors_sha256(tensors) != spec["sha256"]:
                raise RuntimeError(
                    f"{self.root}: seeded weights of body {name!r} do not match the recorded SHA-256"
                )
            self._tensors[name] = tensors
        return self._tensors[name]

    def body_folder(self, name: str, drop_path: float | None = None) -> Path:
        """A folder with config.json + model.safetensors of a seeded body (drop_path_rate overridable).

        Args:
            name: the body's key in the manifest.
            drop_path: overrides the config's drop_path_rate; None: as recorded.
        """
        import json

        from safetensors.numpy import save_file

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="orca_parity_")
        folder = Path(self._tmp.name) / f"{name}_{drop_path}"
        if not (folder / "model.safetensors").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            cfg = json.loads((self.root / self.manifest["bodies"][name]["config"]).read_text())
            if drop_path is not None:
                cfg["drop_path_rate"] = drop_path
            (folder / "config.json").write_text(json.dumps(cfg))
            save_file(self.body_tensors(name), str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder

    def close(self) -> None:
        """Delete the body folders written so far."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ---- our side: bodies, tasks, models -----------------------------------------------------------------------
def _body(golden: Golden, task: str, drop_path: float | None = None):
    from ..bodies import load_body

    name = "swin" if TASK_MODALITY[task] == "2d" else "roberta"
    return load_body(str(golden.body_folder(name, drop_path)), dropout=0.0)


@functools.cache
def _stand_in(task: str):
    from ..tasks import load_task

    return load_task(f"synthetic-{task}", seed=0)


def _task(task: str, case: dict):
    """What our model and loss builders read of a task, taken from our synthetic stand-in of it (same
    loss, metric, pos_weight as the NAS-Bench-360 task), with the golden case's shape."""
    t = _stand_in(task)
    shape = tuple(case.get("shape") or t.input_shape)
    return SimpleNamespace(
        name=task,
        modality=t.modality,
        kind=t.kind,
        input_shape=shape,
        num_outputs=t.num_outputs,
        output_shape=(shape[-2], shape[-1]) if t.dense else None,
        dense=t.dense,
        loss=t.loss,
        metric=t.metric,
        pos_weight=t.pos_weight,
        y_normalizer=t.y_normalizer,
        source="golden",
    )


def _target_seq_len(case: dict) -> int | None:
    """The token budget the golden maker ran ORCA with (recorded per case; ORCA's configs: DeepSEA 512, ECG 64,
    Satellite none, i.e. get_config's 512), else our recipe's; the init cases also compare the recipe's with
    the recorded one (`checks.check_init`)."""
    from ..recipes import recipe_for

    recorded = case.get("target_seq_len")
    return int(recorded) if recorded is not None else recipe_for(case["task"]).target_seq_len


def _build_model(task_ns, body, aligned: bool, target_seq_len):
    from .. import model as M

    kwargs = {"target_seq_len": target_seq_len}
    if "aligned" in inspect.signature(M.build_model).parameters:
        kwargs["aligned"] = aligned
    elif not aligned:
        raise Missing("missing: build_model(aligned=False) (ORCA's fresh embedder init at 0 embedder epochs)")
    return M.build_model(task_ns, body, **kwargs)


def _build_embedder(task_ns, body, aligned: bool, target_seq_len):
    from .. import embedders as M

    kwargs = {"target_seq_len": target_seq_len}
    if "aligned" in inspect.signature(M.build_embedder).parameters:
        kwargs["aligned"] = aligned
    elif not aligned:
        raise Missing(
            "missing: build_embedder(aligned=False) (ORCA's fresh embedder init at 0 embedder epochs)"
        )
    return M.build_embedder(task_ns, body, **kwargs)


def _load_trainable(golden: Golden, model, case: dict) -> None:
    """The seeded task-specific weights of a case into our model (ORCA's predictor.weight → predictor.linear),
    and for a Swin dense head the decoder conv of the body checkpoint."""
    import torch

    values = seeded_tensors(golden.seed, case["trainable"])
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, v in values.items():
            key = name.replace("predictor.", "predictor.linear.") if name.startswith("predictor.") else name
            if key not in ours:
                raise Missing(f"our model has no parameter {key} (ORCA's {name})")
            if tuple(ours[key].shape) != v.shape:
                raise Missing(f"our {key} is {tuple(ours[key].shape)}, ORCA's {name} is {v.shape}")
            ours[key].copy_(torch.from_numpy(v))
        if case["task"] == "darcy":
            body = golden.body_tensors("swin")
            for n in ("weight", "bias"):
                key = f"predictor.conv.{n}"
                if key not in ours:
                    raise Missing("our Darcy predictor has no 1x1 conv: ORCA's Swin decoder head is missing")
                ours[key].copy_(torch.from_numpy(body[f"decoder.0.{n}"]).reshape(ours[key].shape))


def _golden_model(golden: Golden, case: dict, drop_path: float | None = None):
    task = _task(case["task"], case)
    body = _body(golden, case["task"], drop_path)
    model = _build_model(task, body, case.get("embedder_epochs", 1) > 0, _target_seq_len(case))
    _load_trainable(golden, model, case)
    return task, model
