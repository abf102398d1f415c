#!/usr/bin/env python
"""What one trial costs on a card, per precision: refine samples/s, align step time, peak memory, MFU, how many
trials fit per card with fractional GPUs, and the throughput of 1, 2 and 4 trials sharing it.

    python benchmarks/gpu.py                                   # on a GPU node: the paper's shapes, one call
    python benchmarks/gpu.py --device cpu --quick              # small shapes on CPU (CI runs this)
    python benchmarks/gpu.py --precisions fp32 bf16 --tf32     # fp32 rows with TF32 matmuls allowed

Workloads, through the real trial path (task → build_model → Refiner / Aligner):
- "satellite-1d": a Satellite-sized 1D trial (1×46 series, 24 classes, batch 16) through RoBERTa-base's shape;
- "cifar100-2d": a CIFAR-100-sized 2D trial (3×32×32 images resized to 224, 100 classes, batch 32) through
  Swin-base's shape. Bodies are random-initialised from their configs (`random:<alias>`: no download; the
  cost does not depend on the weights). `--quick`: the tiny test bodies and a few steps.

MFU = achieved model FLOP/s over the card's peak at that precision: FLOPs of one training micro-batch
(forward + backward) counted by torch's FlopCounterMode, peaks from NVIDIA's dense datasheet figures for known
cards (`PEAK_TFLOPS`), else (CPU, unknown cards) a measured dense matmul in the same dtype, as the table says.
Trials per card: the card's memory over one trial's peak (+ `CONTEXT_GIB` of CUDA context), i.e. the fraction
to pass as `--gpus-per-trial`. Sharing: k processes each run refine steps at once; their samples/s summed.

Writes the measured throughput as JSON (`--out`, default `orca_ray.throughput.default_throughput_path()`) for
the sweeps' `--dry-run` estimate, which uses the paper-shaped GPU entries only (not quick or CPU runs).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from orca_ray.precision import PRECISIONS, Precision  # noqa: E402

# workload → (task, paper body, quick body, batch size, align points per class)
WORKLOADS = {
    "satellite-1d": ("synthetic-satellite", "random:roberta-base", "tiny-text", 16, 144),
    "cifar100-2d": ("synthetic-cifar100", "random:swin-base", "tiny-swin", 32, 160),
}
# dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets; "fp32+tf32" is the TF32 tensor-core rate
PEAK_TFLOPS = {
    "H100 PCIe": {"fp32": 51.2, "fp32+tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 66.9, "fp32+tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM
    "H200": {"fp32": 66.9, "fp32+tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "fp32+tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "fp32+tf32": 183.0, "bf16": 362.0, "fp16": 362.0},
    "L4": {"fp32": 30.3, "fp32+tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "A10": {"fp32": 31.2, "fp32+tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    "V100": {"fp32": 15.7, "fp32+tf32": 15.7, "fp16": 125.0},
    "T4": {"fp32": 8.1, "fp32+tf32": 8.1, "fp16": 65.0},
}
CONTEXT_GIB = 0.5  # CUDA context and allocator slack per trial process
MEMORY_USE = 0.9  # the share of a card's memory the trials may fill


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@functools.cache  # once per device and precision: every workload divides by the same peak
def peak_flops(device: torch.device, prec: Precision, quick: bool) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) of `device` at `prec`."""
    name = card_name(device)
    if device.type == "cuda":
        for card, peaks in PEAK_TFLOPS.items():  # longest names first in the table (H100 PCIe before H100)
            if card in name and prec.label() in peaks:
                return peaks[prec.label()] * 1e12, f"{card} datasheet"
    n = 512 if quick else 4096
    a = torch.randn(n, n, device=device)
    with prec.autocast(device), prec.tf32_matmuls():
        (a @ a).sum().item()
        reps, t0 = 3, time.perf_counter()
        for _ in range(reps):
            out = a @ a
        sync(device)
        seconds = time.perf_counter() - t0
    del out
    return 2 * n**3 * reps / seconds, f"measured {n}² matmul"


def build(workload: str, device: torch.device, prec: Precision, quick: bool):
    """(task, body, Refiner) of a workload: the trial path with random-initialised weights."""
    from orca_ray.bodies import load_body
    from orca_ray.model import build_model
    from orca_ray.recipes import recipe_for
    from orca_ray.refine import RefineHParams, Refiner
    from orca_ray.tasks import load_task

    task_name, paper_body, quick_body, batch, _ = WORKLOADS[workload]
    task = load_task(task_name, seed=0)
    body = load_body(quick_body if quick else paper_body)
    seq_len = 64 if quick else recipe_for(task_name).target_seq_len  # the tiny body has 128 positions
    model = build_model(task, body, aligned=True, target_seq_len=seq_len, seed=0)
    hp = RefineHParams("adamw", 1e-5, epochs=1, batch_size=batch, accum=1)
    return task, body, Refiner(model, task, hp, seed=0, device=device, precision=prec)


def refine_rate(refiner, steps: int, warmup: int) -> tuple[float, float]:
    """(samples/s, peak memory GiB or NaN) over `steps` micro-batches after `warmup` of them."""
    device, bs = refiner.device, refiner.hp.batch_size
    order = np.random.default_rng(0).permutation(len(refiner.task.train))

    def micro(n):
        return itertools.islice(itertools.cycle(list(refiner.feed.batches(bs, order))), n)

    with refiner.precision.tf32_matmuls():
        refiner.train_batches(micro(warmup))
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        refiner.train_batches(micro(steps))
        sync(device)
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    return steps * bs / seconds, peak


def flops_per_sample(refiner) -> float:
    """Model FLOPs of one training micro-batch (forward + backward) per sample, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y = next(refiner.feed.batches(refiner.hp.batch_size))
    refiner.model.train()
    with FlopCounterMode(display=False) as counter, refiner.precision.autocast(refiner.device):
        refiner.loss_fn(refiner.model(x), y).backward()
    refiner.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def align_step(task, body, refiner, workload: str, epochs: int, quick: bool) -> float:
    """Seconds per align epoch (OTDD of b points per class against a random proxy, one optimiser step)."""
    from orca_ray.align import Aligner, AlignHParams

    b = 8 if quick else WORKLOADS[workload][4]
    n_proxy = 200 if quick else 5000
    g = torch.Generator().manual_seed(0)
    px = torch.randn(n_proxy, body.embed_dim, generator=g)
    py = torch.randint(0, 10, (n_proxy,), generator=g)
    hp = AlignHParams.from_refine(refiner.hp, task.name, batch_per_class=b)
    aligner = Aligner(
        refiner.model.embedder, task, px, py, hp, seed=0, device=refiner.device, precision=refiner.precision
    )
    seconds = []
    aligner.run(epochs, lambda k, value, s, restored: seconds.append(s))
    return float(np.median(seconds[1:] or seconds))  # epoch 0 includes the first-call warm-up


def measure(workload: str, device: torch.device, prec: Precision, args) -> dict:
    task, body, refiner = build(workload, device, prec, args.quick)
    flops = flops_per_sample(refiner)
    sps, peak_gib = refine_rate(refiner, args.steps, args.warmup)
    peak, peak_source = peak_flops(device, prec, args.quick)
    row = {
        "workload": workload,
        "task": WORKLOADS[workload][0].removeprefix("synthetic-"),
        "body": body.name.removeprefix("random:") if not args.quick else body.name,
        "precision": prec.label(),
        "batch_size": refiner.hp.batch_size,
        "refine_samples_per_s": sps,
        "align_step_s": align_step(task, body, refiner, workload, args.align_epochs, args.quick),
        "peak_memory_gib": None if math.isnan(peak_gib) else peak_gib,
        "flops_per_sample": flops,
        "mfu": flops * sps / peak,
        "peak_tflops": peak / 1e12,
        "peak_source": peak_source,
    }
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        row["trials_per_card"] = int(MEMORY_USE * total // (peak_gib + CONTEXT_GIB))
    return row


def shared_rates(workload: str, prec: Precision, args) -> dict[str, float]:
    """Summed samples/s of k trial processes running refine at once on the device, for each k in --share."""
    import tempfile

    out = {}
    for k in args.share:
        with tempfile.TemporaryDirectory(prefix="orca-share-") as barrier:
            cmd = [sys.executable, __file__, "--worker", workload, "--device", args.device, "--precisions"]
            cmd += [prec.name, "--steps", str(args.steps), "--barrier", barrier, "--parties", str(k)]
            cmd += (["--tf32"] if prec.tf32 else []) + (["--quick"] if args.quick else [])
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
            outputs = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"a sharing worker failed ({workload}, {prec.label()}, {k} at once)")
        out[str(k)] = sum(float(o.strip().splitlines()[-1]) for o in outputs)
    return out


def worker(args) -> None:
    """One sharing process: build, warm up, wait until all `parties` are ready (a file each in `barrier`),
    then print its samples/s."""
    if args.device == "cpu":
        torch.set_num_threads(1)  # k CPU "trials" of one thread each, as the demo runs them
    device = torch.device(args.device)
    _, _, refiner = build(args.worker, device, Precision(args.precisions[0], args.tf32), args.quick)
    refine_rate(refiner, 1, 1)
    Path(args.barrier, str(os.getpid())).touch()
    deadline = time.time() + 600
    while len(os.listdir(args.barrier)) < args.parties and time.time() < deadline:
        time.sleep(0.05)
    sps, _ = refine_rate(refiner, args.steps, 0)
    print(sps)


def table(rows: list[dict], device: str) -> str:
    head = (
        f"{'workload':<13} {'body':<13} {'prec':<9} {'samples/s':>10} {'align s':>8} {'peak GiB':>9} "
        f"{'GFLOP/smp':>10} {'MFU':>7} {'trials/card':>11}  shared 1/2/4 (samples/s)"
    )
    lines = [f"device: {device}", head]
    for r in rows:
        mem = "–" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        shared = " / ".join(f"{v:.1f}" for v in r.get("shared_samples_per_s", {}).values()) or "–"
        lines.append(
            f"{r['workload']:<13} {r['body']:<13} {r['precision']:<9} {r['refine_samples_per_s']:>10.1f} "
            f"{r['align_step_s']:>8.3f} {mem:>9} {r['flops_per_sample'] / 1e9:>10.3f} {r['mfu']:>7.2%} "
            f"{r.get('trials_per_card', '–')!s:>11}  {shared}"
        )
    peaks = sorted({f"{r['precision']}: {r['peak_tflops']:.3g} TFLOP/s ({r['peak_source']})" for r in rows})
    return "\n".join([*lines, "MFU peaks: " + "; ".join(peaks)])


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    from orca_ray.throughput import FORMAT, default_throughput_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny bodies, few steps (CI on CPU)")
    ap.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA)")
    ap.add_argument("--workloads", nargs="+", choices=tuple(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--steps", type=int, default=None, help="timed micro-batches (default 50, quick 4)")
    ap.add_argument(
        "--warmup", type=int, default=None, help="untimed micro-batches first (default 10, quick 1)"
    )
    ap.add_argument("--align-epochs", type=int, default=None, help="align steps timed (default 5, quick 2)")
    ap.add_argument("--share", type=int, nargs="*", default=[1, 2, 4], help="trials sharing the device")
    ap.add_argument("--out", default=None, help="throughput JSON (default: where --dry-run looks)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--barrier", help=argparse.SUPPRESS)
    ap.add_argument("--parties", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.precisions = args.precisions or (["fp32", "bf16"] if args.device == "cpu" else list(PRECISIONS))
    args.steps = args.steps or (4 if args.quick else 50)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10)
    args.align_epochs = args.align_epochs or (2 if args.quick else 5)
    if args.worker:
        worker(args)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"error: --device {args.device}: torch {torch.__version__} finds no CUDA device", file=sys.stderr
        )
        return 2
    device = torch.device(args.device)
    rows = []
    for workload in args.workloads:
        for name in args.precisions:
            prec = Precision(name, args.tf32 and name == "fp32")
            row = measure(workload, device, prec, args)
            if args.share:
                row["shared_samples_per_s"] = shared_rates(workload, prec, args)
            rows.append(row)
            print(f"  measured {workload} {prec.label()}", file=sys.stderr, flush=True)
    print(table(rows, card_name(device)))
    if not args.no_write:
        out = Path(args.out) if args.out else default_throughput_path()
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "format": FORMAT,
            "device": card_name(device),
            "device_type": device.type,
            "quick": args.quick,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "torch": torch.__version__,
            "entries": rows,
        }
        out.write_text(json.dumps(record, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
