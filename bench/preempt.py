"""Graceful stop requests: SIGTERM, SIGUSR2 (SLURM's time-limit/preemption warning) and Ctrl-C.

Why flags and not exceptions: a signal lands between two Python bytecodes, possibly in
the middle of an optimiser update, so raising there would checkpoint a half-updated
model. Instead the first signal only *requests* a stop; the training loop polls
`requested()` after every optimiser step, writes a checkpoint at that consistent point
and raises `Preempted`. A second signal (an impatient user, or SLURM's SIGKILL
escalation path) raises at once, like the default Ctrl-C.

The job body (`bench.job`) installs the handlers around a stage and decides what a
`Preempted` means: under SLURM the job requeues itself and resumes from the checkpoint
on disk; locally the stage is marked interrupted and the next `bench run` resumes it.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR2", None), signal.SIGINT) if s is not None)

_state: dict[str, Any] = {"signal": None, "count": 0}


class Preempted(KeyboardInterrupt):
    """The stage stopped on request after writing a checkpoint (it resumes from there)."""

    def __init__(self, signum: int | None, message: str = "") -> None:
        self.signum = signum
        name = signal.Signals(signum).name if signum else "a stop request"
        super().__init__(message or f"stopped on {name}; checkpoint written")


def requested() -> bool:
    """True once a stop signal arrived (cheap: the loop calls it after every step)."""
    return _state["signal"] is not None


def signal_number() -> int | None:
    return _state["signal"]


def request(signum: int = signal.SIGTERM) -> None:
    """Ask for a graceful stop from code (tests, a watchdog thread)."""
    _state["signal"] = signum
    _state["count"] += 1


def reset() -> None:
    _state["signal"] = None
    _state["count"] = 0


def _handler(signum: int, frame: Any) -> None:
    _state["count"] += 1
    if _state["signal"] is None:
        _state["signal"] = signum
    if _state["count"] > 1:
        raise KeyboardInterrupt(f"second stop signal ({signal.Signals(signum).name}): stopping now")


@contextmanager
def graceful_stop() -> Iterator[None]:
    """Install the flag handlers (main thread only; elsewhere this is a no-op) and restore the old ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    old = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
