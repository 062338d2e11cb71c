"""DeferredInterrupt: the first Ctrl-C is held, the second interrupts; an ignored or custom SIGINT
handler is left alone."""

import os
import signal

import pytest

from warped_fast.train.interrupt import DeferredInterrupt


def test_first_ctrl_c_held_second_raises():
    with DeferredInterrupt() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("handler", [signal.SIG_IGN, "custom"])
def test_other_sigint_handlers_are_left_alone(handler):
    seen = []
    handler = (lambda signum, frame: seen.append(signum)) if handler == "custom" else handler
    previous = signal.signal(signal.SIGINT, handler)
    try:
        with DeferredInterrupt() as stop:
            assert signal.getsignal(signal.SIGINT) is handler
            os.kill(os.getpid(), signal.SIGINT)
        assert not stop.requested and signal.getsignal(signal.SIGINT) is handler
        assert seen == ([] if handler is signal.SIG_IGN else [signal.SIGINT])
    finally:
        signal.signal(signal.SIGINT, previous)
