"""Graceful stops: SIGTERM and SIGINT become a request to stop at the next step boundary.

Schedulers preempt jobs with SIGTERM (then SIGKILL after a grace period);
users press Ctrl-C. Either way the trainer finishes the step (or traced
call) in flight, saves a checkpoint, flushes its summaries and exits, so the
same command resumes exactly. A second Ctrl-C aborts at once; a second
SIGTERM ends the process at once, and so does any signal once the training
loop is over (`StopRequest.release`): the run's work is then saved or about
to be, and TensorFlow's clean-up can block the main thread in C++, where no
Python signal handler ever runs, so only the signals' default actions are
sure to end it.
"""

from __future__ import annotations

import signal
import sys


class Stopped(Exception):
    """Training stopped early on request, after saving a checkpoint.

    Attributes:
        signum: the signal that asked for the stop.
        step: the global step the checkpoint holds.
    """

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}; checkpoint {checkpoint} saved; "
                         "run the same command again to resume")
        self.signum = signum
        self.step = step


class StopRequest:
    """Records SIGTERM/SIGINT instead of dying; call it to ask whether a stop was requested.

    Use as a context manager around training: the previous handlers are
    restored on exit, or earlier by `release`.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, log=print):
        self.signum: int | None = None
        self._log = log
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Restores the previous handlers (the default ones, on the command line).

        The trainer calls it once its loop is over, so that a signal from then
        on ends the process (SIGTERM by the kernel, SIGINT as
        KeyboardInterrupt) instead of being recorded for a loop that no longer
        polls. Idempotent.
        """
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def handle(self, signum: int, frame=None) -> None:
        """The signal handler: records the first signal; a second SIGINT or SIGTERM aborts.

        After the first signal, SIGTERM takes its default action again: the
        kernel ends the process on a second one even while the main thread
        waits in C++ code, where this handler could never run.
        """
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            if signal.SIGTERM in self._previous:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._log(f"{signal.Signals(signum).name} received: finishing the current step, "
                      "then saving a checkpoint (Ctrl-C or SIGTERM again to abort at once)")
            sys.stdout.flush()

    def __call__(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None
