"""Sweeps: plan a trial matrix (`plan`, no Ray), run it on Ray Tune (`runner`), the scripts' shared command
line (`cli`). Importing this package does not import Ray; `run_sweep` (from `runner`) is imported on first use.
"""

from .cli import main
from .plan import SweepSpec, estimate, expand_grid, print_plan

__all__ = ["SweepSpec", "estimate", "expand_grid", "main", "print_plan", "run_sweep"]


def __getattr__(name: str):
    if name == "run_sweep":  # imports Ray, so only when asked for
        from .runner import run_sweep

        return run_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
