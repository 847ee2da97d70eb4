"""Run a Python command as a child and record its own wall time and peak RSS.

::

    python -m urnet_core.benchmarks.launch OUT.json -m urnet_core.cli -v weights ...

Forks (no vfork, so the caller's memory is not inherited) and execs ``sys.executable`` with the
arguments after ``OUT.json``; while the child runs, its ``VmHWM`` is polled from
``/proc/<pid>/status``, and when it exits its ``ru_maxrss`` is read from ``wait4``. ``OUT.json``
receives ``wall`` (seconds), ``status`` (exit code), ``ru_maxrss_bytes`` and
``vmhwm_polled_bytes``; the launcher exits with the child's code. It imports nothing beyond the
standard library, so it is about 10 MB when it forks.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Sequence


def _poll_vmhwm(pid: int, peak: list[int], every: float = 0.05) -> None:
    """Keep ``peak[0]`` at the largest ``VmHWM`` of ``pid`` seen, until the process is gone."""
    while True:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(every)


def launch(out_json: str, args: Sequence[str]) -> int:
    """Run ``sys.executable *args`` as a forked child; write its measurements to ``out_json``.

    Returns the child's exit code.
    """
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: become the command (exec keeps the fresh pid, no vfork)
        os.execv(sys.executable, [sys.executable, *args])
    peak = [0]
    threading.Thread(target=_poll_vmhwm, args=(pid, peak), daemon=True).start()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(out_json, "w") as fh:
        json.dump({"wall": wall, "status": code, "ru_maxrss_bytes": usage.ru_maxrss * 1024,
                   "vmhwm_polled_bytes": peak[0]}, fh)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        print("usage: python -m urnet_core.benchmarks.launch OUT.json ARGS...", file=sys.stderr)
        return 2
    return launch(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
