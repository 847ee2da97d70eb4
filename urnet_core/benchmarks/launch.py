"""Run a Python command as a child and record its own wall time and peak RSS.

::

    python -m urnet_core.benchmarks.launch OUT.json -m urnet_core.cli -v weights ...

Forks (no vfork, so the caller's memory is not inherited) and execs ``sys.executable`` with the
arguments after ``OUT.json``; while the child runs, its ``VmHWM`` is polled from
``/proc/<pid>/status``, and when it exits its ``ru_maxrss`` is read from ``wait4``. ``OUT.json``
receives ``wall`` (seconds), ``status`` (exit code), ``ru_maxrss_bytes``,
``vmhwm_polled_bytes`` and ``cpu`` (:func:`cpu_share`: the CPU seconds of the child, of the
whole machine and of the hypervisor's steal over the child's lifetime, so a reader can tell
whether other work shared the cores); the launcher exits with the child's code. It imports
nothing beyond the standard library, so it is about 10 MB when it forks.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from typing import Sequence


def machine_cpu_seconds() -> tuple[float, float] | None:
    """``(busy, steal)`` CPU seconds of all cores since boot from ``/proc/stat`` (None without it).

    Busy is user + nice + system + irq + softirq (guest time is inside user); steal is time the
    hypervisor gave this machine's cores to other guests (shared cores).
    """
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(v) for v in fields[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq) / hz, steal / hz


def cpu_share(wall: float, child_cpu: float, start: tuple[float, float] | None,
              end: tuple[float, float] | None, own_cpu: float = 0.0) -> dict[str, float | None]:
    """CPU use over one child's lifetime: ``child_s`` (its user + system seconds), ``machine_busy_s``,
    ``steal_s``, and ``other_cores`` = (machine busy - child - launcher) / wall, the average number
    of cores other processes kept busy (0 on an otherwise idle machine; None without ``/proc/stat``),
    ``steal_cores`` = steal / wall."""
    out: dict[str, float | None] = {"child_s": child_cpu, "machine_busy_s": None, "steal_s": None,
                                    "other_cores": None, "steal_cores": None}
    if start is None or end is None or wall <= 0:
        return out
    busy, steal = end[0] - start[0], end[1] - start[1]
    out.update(machine_busy_s=busy, steal_s=steal, other_cores=max(0.0, busy - child_cpu - own_cpu) / wall,
               steal_cores=max(0.0, steal) / wall)
    return out


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
    cpu0 = machine_cpu_seconds()
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    pid = os.fork()
    if pid == 0:  # the child: become the command (exec keeps the fresh pid, no vfork)
        os.execv(sys.executable, [sys.executable, *args])
    peak = [0]
    threading.Thread(target=_poll_vmhwm, args=(pid, peak), daemon=True).start()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    cpu1 = machine_cpu_seconds()
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    code = os.waitstatus_to_exitcode(status)
    own = (own1.ru_utime - own0.ru_utime) + (own1.ru_stime - own0.ru_stime)  # the VmHWM poller
    cpu = cpu_share(wall, usage.ru_utime + usage.ru_stime, cpu0, cpu1, own_cpu=own)
    with open(out_json, "w") as fh:
        json.dump({"wall": wall, "status": code, "ru_maxrss_bytes": usage.ru_maxrss * 1024,
                   "vmhwm_polled_bytes": peak[0], "cpu": cpu}, fh)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        print("usage: python -m urnet_core.benchmarks.launch OUT.json ARGS...", file=sys.stderr)
        return 2
    return launch(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
