"""Ctrl+C that loses no finished epoch: the driver stops once the checkpoints being saved are recorded.

A function trainable's `tune.report(row, checkpoint=...)` reaches the driver in two steps: the result (the
ParquetSink writes the row) and, an event later, the save that records the checkpoint. Tune's own SIGINT
handler ends the run after the current step, so a stop between the two leaves a Parquet row whose checkpoint
Tune never recorded, and the resumed trial runs that epoch again. `FinishSavesOnStop` holds the stop until no
trial has a save in flight (or `timeout_s` passed), then hands it to Tune's handler.
"""

from __future__ import annotations

import signal
import threading
import time

from ray import tune


class FinishSavesOnStop(tune.Callback):
    """Defers Ctrl+C (SIGINT) until no trial has a checkpoint save in flight; a second Ctrl+C stops at once.

    Installed in `setup`, after Tune installed its own handler (which it wraps, and which still does the stop:
    the last experiment checkpoint, then `Tuner.fit` returns); Tune's handler is back in place when the
    experiment ends. Does nothing outside the main thread or when Tune's handler is off
    (`TUNE_DISABLE_SIGINT_HANDLER=1`).

    Args:
        timeout_s: the longest a stop waits for saves in flight (a save is a small message once the trial has
            written its checkpoint; this bounds a stuck one).
    """

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self._tune_handler = None
        self._requested_at: float | None = None
        self._forwarded = False

    def setup(self, **info):
        if threading.current_thread() is not threading.main_thread():
            return
        handler = signal.getsignal(signal.SIGINT)
        if getattr(handler, "__name__", "") != "signal_interrupt_tune_run":
            return  # not Tune's handler: Tune's SIGINT handling is off (or not ours to wrap)
        self._tune_handler = handler
        self._requested_at, self._forwarded = None, False
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, sig, frame):
        if self._requested_at is not None:  # the second Ctrl+C: stop now
            self._forward(sig, frame)
            return
        self._requested_at = time.monotonic()
        print(
            "\nstopping: waiting for the checkpoints being saved to be recorded "
            "(Ctrl+C again to stop at once; the epochs they hold would then run again on resume)",
            flush=True,
        )

    def _forward(self, sig=signal.SIGINT, frame=None):
        if not self._forwarded and self._tune_handler is not None:
            self._forwarded = True
            self._tune_handler(sig, frame)  # sets Tune's stop event and puts the handler before Tune's back

    def on_step_end(self, iteration: int, trials: list, **info):
        if self._requested_at is None or self._forwarded:
            return
        saving = any(t.is_saving for t in trials)
        if not saving or time.monotonic() - self._requested_at > self.timeout_s:
            self._forward()

    def on_experiment_end(self, trials: list, **info):
        # Tune's handler back, as if this callback had never been there (if it is still ours)
        if self._tune_handler is not None and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._tune_handler)

    def __getstate__(self):
        # pickled with the Tuner (tuner.pkl): the handler of this process is not state
        d = self.__dict__.copy()
        d["_tune_handler"], d["_requested_at"], d["_forwarded"] = None, None, False
        return d
