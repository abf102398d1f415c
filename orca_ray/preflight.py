"""Checks that run on the driver before Ray starts, so bad input costs seconds and one clear line.

    problems = preflight(configs)        # every task loaded or its files checked, every body and proxy resolved
    check_name("my-sweep")               # a sweep name is one path component

Each task of the sweep is loaded once (the user's own files: shapes, labels, splits) or, for the NAS-Bench-360
tasks, its files are looked up under the data root (loading those converts gigabytes, which the trials do on
their nodes). Every problem is one line naming the file and field (or the flag) and what to do;
`PreflightError` carries them all. Nothing here starts Ray or writes to the sweep's storage.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from contextlib import contextmanager

from .config import TrialConfig


class PreflightError(ValueError):
    """The sweep cannot start; `lines` are the problems, one line each.

    Args:
        lines: the problems; each is folded onto one line.
    """

    def __init__(self, lines: list[str]):
        self.lines = [" ".join(str(line).split()) for line in lines]  # one line each, whatever the source
        super().__init__("\n".join(self.lines))


# ---- command-line values -----------------------------------------------------------------------------------
def count(minimum: int):
    """An argparse `type` for an integer that must be at least `minimum`.

    Args:
        minimum: the smallest value accepted.
    """

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v

    parse.__name__ = f"integer >= {minimum}"
    return parse


def amount(minimum: float, *, inclusive: bool = True):
    """An argparse `type` for a number that must be at least (or above) `minimum`.

    Args:
        minimum: the bound.
        inclusive: whether `minimum` itself is accepted.
    """

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not (v >= minimum if inclusive else v > minimum):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {minimum:g}, got {text}")
        return v

    parse.__name__ = "number"
    return parse


def fraction(text: str) -> float:
    """An argparse `type` for a fraction strictly between 0 and 1.

    Args:
        text: the flag's value as typed.
    """
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return v


def check_name(name: str) -> str:
    """A sweep name: one path component (it names a folder under the storage), no `/`, `\\` or `..`.

    Args:
        name: the `--name` value.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise argparse.ArgumentTypeError(
            f"{name[:80]!r}{'...' if len(name) > 80 else ''} is not a sweep name: use up to {MAX_NAME} letters, "
            "digits, '-', '_' or '.' (no '/', '..', spaces, control characters or leading '.')"
        )
    return name


MAX_NAME = 128  # a sweep name is a folder name, and a prefix of every trial's
_NAME = re.compile(rf"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{{0,{MAX_NAME - 1}}}")
MAX_SPEC = 1024  # a body, proxy or task name (a path or hub id) flows into trial folder names and logs


def check_text_fields(configs: list[TrialConfig]) -> list[str]:
    """Problems with the names the trials carry (task, body, proxy): control characters (a newline would split
    a log line or a folder name) or more than `MAX_SPEC` characters; one line each.

    Args:
        configs: the sweep's trials.
    """
    problems = []
    for field in ("task", "body", "proxy"):
        for value in dict.fromkeys(str(getattr(c, field)) for c in configs):
            if len(value) > MAX_SPEC or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                shown = value[:60].encode("unicode_escape").decode()
                problems.append(
                    f"{field} {shown!r}{'...' if len(value) > 60 else ''}: names may not hold control characters "
                    f"(newlines, tabs) or exceed {MAX_SPEC} characters; fix the flag or the script's space"
                )
    return problems


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line (`prog: error: ...`) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---- the sweep's trials ----------------------------------------------------------------------------------------
def preflight(
    configs: list[TrialConfig], out=print, loaded: dict | None = None, *, dry_run: bool = False
) -> list[str]:
    """Load or check every task, body and proxy the trials use; raise PreflightError listing every problem.

    Args:
        configs: the sweep's trials.
        out: where progress lines go (one per task).
        loaded: filled with the tasks loaded here, by `trainable.task_key`, so the sweep's preloading does not
            load them a second time.
        dry_run: `--dry-run`: data staged on the cluster (NAS-Bench-360 under `--data-root`) that this machine
            lacks is listed as "not staged here" instead of failing; the user's own files are still loaded.

    Returns:
        One line per task describing what was found (also given to `out`).
    """
    from .tasks import task_info

    problems: list[str] = check_text_fields(configs)
    if problems:  # such a name would reach file paths and loaders below
        raise PreflightError(problems)
    lines: list[str] = []
    seen_tasks: set = set()
    seen_models: set = set()
    for c in configs:  # bodies and proxies first: a typo there costs no data loading
        if (c.body, c.proxy, c.preset) not in seen_models:
            seen_models.add((c.body, c.proxy, c.preset))
            _check_body_and_proxy(c, problems, out if dry_run else None)
    _check_body_takes_task(configs, problems)
    if not problems:
        _check_lora(configs, problems)
    with _notes_to(out):
        for c in configs:
            key = (c.task, c.data_root, c.val_fraction, c.max_train_samples, c.max_eval_samples, c.protocol)
            if key in seen_tasks:
                continue
            seen_tasks.add(key)
            try:
                info = task_info(c.task)
            except KeyError as e:
                problems.append(str(e.args[0]))
                continue
            line = _check_task(c, info, problems, loaded, dry_run=dry_run)
            if line:
                lines.append(line)
                out(line)
    if problems:
        raise PreflightError(list(dict.fromkeys(problems)))
    return lines


def _check_task(
    c: TrialConfig, info, problems: list[str], loaded: dict | None = None, *, dry_run: bool = False
) -> str | None:
    from .tasks import TaskDataError
    from .trainable import load_trial_task, task_key

    # a dry run often happens on a laptop before the cluster has the data
    if dry_run and str(c.task).startswith("openml:"):
        from .tasks.tabular import openml

        folder = openml.staged_dir(openml.parse_id(c.task), c.data_root)
        if not (folder / openml.META_FILE).is_file():
            return f"{c.task}: not staged here (OpenML table under {folder}; the run loads it on the cluster)"
    if info.needs_data_root and dry_run:
        found: list[str] = []
        line = _check_task(c, info, found) if c.data_root else None
        return line or (
            f"{c.task}: not staged here (NAS-Bench-360 files under --data-root "
            f"{c.data_root or 'DIR'} on the cluster's nodes; the run checks them before Ray starts)"
        )
    if info.needs_data_root:
        if not c.data_root:
            problems.append(
                f"task {c.task!r} reads NAS-Bench-360 files: pass --data-root DIR (see "
                f"`python -m orca_ray.data check DIR`) or use --preset demo"
            )
            return None
        from .tasks.nb360.staging import check

        report = check(c.data_root, [c.task], hash_files=False, load=False)
        if "error" in report:
            problems.append(f"--data-root {report['error']}")
            return None
        entry = report["tasks"][c.task]
        problems += entry["problems"]
        return None if entry["problems"] else f"checked {c.task}: its files are under {c.data_root}"
    try:
        task = load_trial_task(c)  # as the trial will: same split, subsets and protocol
    except (TaskDataError, OSError, ValueError) as e:  # the loaders name the file and field
        problems.append(str(e))
        return None
    if loaded is not None:
        loaded[task_key(c)] = task
    return f"checked {describe(task)}"


def describe(task) -> str:
    """One line: the task, its shapes and splits, and (for classification) its classes by original name.

    Args:
        task: a loaded Task.
    """
    line = task.describe()
    if task.class_names and task.class_names != tuple(str(i) for i in range(task.num_outputs)):
        shown = ", ".join(task.class_names[:8]) + (", ..." if task.num_outputs > 8 else "")
        line += f"; classes 0..{task.num_outputs - 1} = {shown}"
    for note in task.notes.values():
        if isinstance(note, str):
            line += f"; {note}"
    return line


def _check_body_and_proxy(c: TrialConfig, problems: list[str], dry_run_out=None) -> None:
    from .bodies import BodyNotFoundError, check_body
    from .proxies import resolve_proxy

    try:
        check_body(c.body)
    except (BodyNotFoundError, OSError, ValueError) as e:
        if dry_run_out is not None and "not in the local Hugging Face cache" in str(e):
            # a dry run on a laptop: the cluster's nodes hold the weights the real run loads
            dry_run_out(f"body {c.body!r}: not cached here (the run loads it where the trials run)")
            return
        problems.append(f"body {c.body!r}: {e}" if c.body not in str(e) else str(e))
        return
    try:
        resolve_proxy(c.proxy, c.body, c.preset)
    except ValueError as e:
        problems.append(str(e))


def _check_body_takes_task(configs: list[TrialConfig], problems: list[str]) -> None:
    """A 2D task given a body family that takes 1D tasks only (decoders, encoder-decoders)."""
    from .bodies import family_of
    from .tasks import task_modality

    for body, task in dict.fromkeys((c.body, c.task) for c in configs):
        try:
            fam = family_of(body)
            if fam is None or fam.takes_2d_tasks or task_modality(task) != "2d":
                continue
        except Exception:  # a bad body or task: reported by its own check
            continue
        problems.append(
            f"task {task!r} is 2D but body {body!r} ({fam.name} family) takes 1D tasks only; give it 1D tasks or "
            "use a Swin or encoder body"
        )


def _check_lora(configs: list[TrialConfig], problems: list[str]) -> None:
    """Every body a LoRA trial adapts is loaded once: its attention layers must be targetable and the rank at
    most the narrowest of them."""
    from .bodies import BodyNotFoundError, load_body
    from .lora import LoRATargetError, max_lora_rank

    ranks: dict[str, set[int]] = {}
    for c in configs:
        if c.lora_rank:
            ranks.setdefault(c.body, set()).add(c.lora_rank)
    for body_name, rs in ranks.items():
        try:
            limit = max_lora_rank(load_body(body_name))
        except LoRATargetError as e:
            problems.append(f"--lora-rank / --ranks: {e}")
            continue
        except (BodyNotFoundError, OSError):  # not on this machine (--dry-run lists it): the nodes check it
            continue
        too_big = sorted(r for r in rs if r > limit)
        if too_big:
            problems.append(
                f"--lora-rank / --ranks: rank {too_big[0]} exceeds {limit}, the width of the narrowest layer "
                f"LoRA adapts in body {body_name!r}; use ranks 1..{limit} (a few, e.g. 1 4 16, are usual)"
            )


@contextmanager
def _notes_to(out):
    """Route the task loaders' one-line notes (e.g. the validation-carve fallback) to `out` while checking."""
    logger = logging.getLogger("orca_ray.tasks")

    class Handler(logging.Handler):
        def emit(self, record):
            out(f"  note: {record.getMessage()}")

    handler, propagate = Handler(logging.INFO), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def check_spec(spec: str, *, val_fraction: float = 0.1, seed: int = 0, out=print) -> int:
    """`python -m orca_ray.data check SPEC` for one task (npz:, ucr:, imagefolder:, a bundled name): load it and
    print its shapes, classes and per-split class counts; return 0, or 1 with one `error:` line.

    Args:
        spec: the task spec.
        val_fraction: validation share carved from train (as `--val-fraction`).
        seed: seed of the carve.
        out: where lines go.
    """
    import numpy as np

    from .tasks import TaskDataError, absolute_spec, load_task

    spec = absolute_spec(spec)
    try:
        with _notes_to(out):
            task = load_task(spec, seed=seed, val_fraction=val_fraction)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1
    except (TaskDataError, OSError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    out(f"{spec}: OK")
    out(f"  {describe(task)}")
    if task.kind == "classification":
        for name, split in task.splits().items():
            counts = np.bincount(split.y, minlength=task.num_outputs).tolist()
            out(f"  {name} class counts {counts}")
    if task.fingerprint:
        out(f"  content fingerprint {task.fingerprint} ({len(task.files)} file(s))")
    return 0


def fail(e: PreflightError, file=None) -> int:
    """Print a PreflightError's lines as `error: ...` (to stderr by default) and return the exit code (2).

    Args:
        e: the error.
        file: where to print (default stderr).
    """
    for line in e.lines:
        print(f"error: {line}", file=file or sys.stderr)
    return 2
