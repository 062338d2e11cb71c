"""Ctrl-C during training: the step in progress finishes, the run checkpoints there, then the
KeyboardInterrupt goes on. A second Ctrl-C interrupts at once (the checkpoint before stays)."""

from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    """Context manager holding SIGINT: ``requested`` turns True at the first Ctrl-C, which raises
    nothing; the second raises KeyboardInterrupt where the program is. It does nothing off the main
    thread (where signal handlers cannot be set) and where SIGINT is not Python's default (ignored, as
    for a background job, or handled by the application)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
