"""Preemption: SIGTERM / SIGUSR1 (and SIGUSR2 when a launcher such as submitit owns it) only raise a flag;
the loop finishes the current update, writes last.ckpt and stops with exit code EXIT_PREEMPTED.

A handler that was installed before ours (submitit's requeue handler) is called after the checkpoint is on
disk, so the launcher can requeue the job; the requeued run resumes from last.ckpt.
"""
from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Callable

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again"; requeue scripts rerun the same command on this code


class Preempted(Exception):
    """Raised by the loop after last.ckpt was written in answer to a signal."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}; last.ckpt written, rerun the same command to resume")
        self.signum = signum


class PreemptionHandler:
    """Installs flag-raising handlers; `requested` is the signal number received (0 = none)."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")

    def __init__(self) -> None:
        self.requested = 0
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = self.requested or signum

    def install(self) -> "PreemptionHandler":
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                prev = signal.getsignal(sig)
                # SIGUSR2 is only taken over when a launcher (submitit) already handles it
                if name == "SIGUSR2" and not callable(prev):
                    continue
                signal.signal(sig, self._on_signal)
                self._previous[sig] = prev
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                continue
        return self

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            try:
                signal.signal(sig, prev)
            except (ValueError, TypeError):
                pass
        self._previous.clear()

    def chain(self) -> None:
        """Hand the received signal to the handler that was there before ours (e.g. submitit's requeue)."""
        prev: Callable | Any = self._previous.get(self.requested)
        if callable(prev):
            prev(self.requested, None)
