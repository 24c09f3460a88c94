"""Preemption and Ctrl-C: SIGTERM / SIGUSR1 / SIGINT (and SIGUSR2 when a launcher such as submitit owns it) only
raise a flag; the loop finishes the current update, writes last.ckpt and stops with exit code EXIT_PREEMPTED
(EXIT_INTERRUPTED for SIGINT). A second SIGINT stops at once (KeyboardInterrupt), last.ckpt being the last one written.

SLURM, `timeout`, container runtimes and a terminal send these to the whole process group: the loaders start their
worker processes with the signals blocked (data.base.stop_signals_blocked), so the trainer alone answers them.

A handler that was installed before ours (submitit's requeue handler) is called after the checkpoint is on
disk, so the launcher can requeue the job; the requeued run resumes from last.ckpt.
"""
from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any, Callable

from ..data.base import STOP_SIGNALS

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again"; requeue scripts rerun the same command on this code
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a program ended by Ctrl-C


class Preempted(Exception):
    """Raised by the loop after last.ckpt was written in answer to a signal."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}; last.ckpt written, rerun the same command to resume")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signum == signal.SIGINT else EXIT_PREEMPTED


class PreemptionHandler:
    """Installs flag-raising handlers; `requested` is the signal number received (0 = none)."""

    def __init__(self) -> None:
        self.requested = 0
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C again: the user does not want to wait for the update
        if self.requested:
            return
        self.requested = signum
        again = " (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""
        # os.write, not print or logging: a handler that writes to a stream the interrupted code is writing to fails
        os.write(2, f"{signal.Signals(signum).name}: finishing the current update, then writing last.ckpt{again}\n".encode())

    def install(self) -> "PreemptionHandler":
        for sig in STOP_SIGNALS:
            try:
                prev = signal.getsignal(sig)
                # SIGUSR2 is only taken over when a launcher (submitit) already handles it; SIGINT is left ignored
                # where the launcher ignores it (a background job of a shell: Ctrl-C is not meant for it)
                if (sig == getattr(signal, "SIGUSR2", None) and not callable(prev)) or (
                        sig == signal.SIGINT and prev == signal.SIG_IGN):
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
        """Hand the received signal to the handler that was there before ours (e.g. submitit's requeue); not to
        Python's own SIGINT handler, which would raise KeyboardInterrupt over the orderly stop."""
        prev: Callable | Any = self._previous.get(self.requested)
        if callable(prev) and prev is not signal.default_int_handler:
            prev(self.requested, None)
