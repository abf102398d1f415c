"""NAS-Bench-360 data roots from the command line: check what a folder holds, stage it to shared storage, fetch it
back. The logic lives in `orca_ray.tasks.nb360.staging`. `check` also takes one task spec of your own data.

    python -m orca_ray.data check ROOT [--tasks darcy ecg] [--json] [--no-load] [--no-hash]
    python -m orca_ray.data check npz:PATH | ucr:DIR | imagefolder:DIR [--val-fraction F]   # load and describe
    python -m orca_ray.data stage ROOT DEST [--tasks ...]   # DEST: /shared/path, s3://bucket/prefix, gs://...
    python -m orca_ray.data fetch SRC DEST [--tasks ...]    # a staged copy (local or s3://, gs://) -> local DEST
    python -m orca_ray.data stage openml:31 [openml:54 ...] [--data-root DIR] [--data-home SKLEARN_CACHE]

The exit code is 1 when anything requested is missing or broken (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys

from .io import is_uri
from .preflight import check_spec, fraction
from .tasks import split_spec
from .tasks.nb360.staging import StageError, check, fetch, print_check, stage


# ---- CLI --------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """The `python -m orca_ray.data` command.

    Args:
        argv: the arguments (default: sys.argv[1:]).

    Returns:
        The exit code: 0 all good, 1 something missing or broken, 2 bad arguments.
    """
    ap = argparse.ArgumentParser(prog="python -m orca_ray.data", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="what a data root holds, what is missing and where it goes")
    c.add_argument(
        "root", help="a NAS-Bench-360 data root, or a task spec: npz:PATH, ucr:DIR, imagefolder:DIR"
    )
    c.add_argument("--tasks", nargs="+", metavar="TASK")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--no-load", action="store_true", help="files and checksums only; do not load the tasks")
    c.add_argument("--no-hash", action="store_true", help="skip the sha256 of every file")
    c.add_argument(
        "--val-fraction", type=fraction, default=0.1, help="a task spec: validation share carved from train"
    )
    s = sub.add_parser(
        "stage", help="copy a checked root to shared storage (path, s3://, gs://) + MANIFEST.json"
    )
    s.add_argument("root", help="a NAS-Bench-360 data root, or openml:ID (then no DEST; several ids allowed)")
    s.add_argument("dest", nargs="*", help="where a NAS-Bench-360 root goes; more openml:ID for OpenML")
    s.add_argument("--data-root", help="openml:ID: the data root to stage under (default: the cache folder)")
    s.add_argument("--data-home", help="openml:ID: scikit-learn's OpenML download cache")
    s.add_argument("--tasks", nargs="+", metavar="TASK")
    s.add_argument("--no-load", action="store_true", help="check files and checksums only before staging")
    f = sub.add_parser("fetch", help="copy a staged root to local disk, verified against its MANIFEST.json")
    f.add_argument("src")
    f.add_argument("dest")
    f.add_argument("--tasks", nargs="+", metavar="TASK")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except (StageError, ValueError, OSError) as e:  # one line each: the file or flag and the fix
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1


def _run(args) -> int:
    if args.cmd == "check" and split_spec(args.root)[1] is not None:
        return check_spec(args.root, val_fraction=args.val_fraction)
    if args.cmd == "check":
        if is_uri(args.root):
            print(
                f"check reads a local folder; copy it here first: python -m orca_ray.data fetch {args.root} DIR",
                file=sys.stderr,
            )
            return 2
        report = check(args.root, args.tasks, hash_files=not args.no_hash, load=not args.no_load)
        if args.json:
            print(json.dumps(report, indent=1, default=str))
        else:
            print_check(report)
        return 0 if report["ok"] else 1
    if args.cmd == "stage" and args.root.startswith("openml:"):
        return _stage_openml([args.root, *args.dest], args.data_root, args.data_home)
    if args.cmd == "stage":
        if len(args.dest) != 1:
            raise ValueError("stage ROOT DEST: give one DEST (a path, s3:// or gs:// URI)")
        stage(args.root, args.dest[0], args.tasks, load=not args.no_load)
    else:
        fetch(args.src, args.dest, args.tasks)
    return 0


def _stage_openml(specs: list[str], data_root, data_home) -> int:
    from .tasks import TaskDataError
    from .tasks.tabular import openml

    try:
        ids = [openml.parse_id(s) for s in specs]
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    failed = 0
    for did in ids:
        try:
            out = openml.stage(did, data_root, data_home=data_home)
        except TaskDataError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"staged openml:{did} -> {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
