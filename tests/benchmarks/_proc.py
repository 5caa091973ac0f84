"""CPU seconds per process group, read from /proc: where a training run's CPU time goes.

A sampler thread snapshots every descendant of this process (Ray's GCS and raylet started by
``ray.init``, Ray's workers under the raylet, the plain baseline's DDP ranks and their DataLoader
workers) with its user + system CPU time and a group named from its command line (Ray titles its
worker processes ``ray::<actor or task>``). :meth:`CpuSampler.between` attributes what each
process spent in a time window to its group. Processes of other users of the machine (other Ray
instances) are not descendants and are not counted.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
# Ray's own actors that coordinate rather than compute: Ray Train's controller, its dataset
# manager, collective barrier, placement-group cleaner and preemption watcher, Ray Data's split
# coordinators (one per stream), stats and autoscaling actors, and the progress queue.
COORDINATORS = ("SplitCoordinator", "DatasetManager", "TrainController", "_StatsActor", "AutoscalingCoordinator",
                "TrainStateActor", "SynchronizationActor", "PlacementGroupCleaner", "PreemptionWatcher",
                "_QueueActor")
GROUPS = ("driver", "trainers", "data_workers", "ray_coordinators", "raylet_gcs", "other")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def classify(pid: int, cmd: str, parent_cmd: str, root: int) -> str:
    """The group of one process (see GROUPS)."""
    if pid == root:
        return "driver"
    if "ray::" in cmd:
        if "TrainWorker" in cmd:
            return "trainers"
        if any(c in cmd for c in COORDINATORS):
            return "ray_coordinators"
        return "data_workers"  # Ray Data's read / map_batches tasks (and idle pooled workers)
    if "gcs_server" in cmd or "raylet" in cmd:
        return "raylet_gcs"
    if "multiprocessing.spawn" in cmd:  # the plain baseline: DDP ranks, and their DataLoader workers
        return "data_workers" if "multiprocessing.spawn" in parent_cmd else "trainers"
    return "other"  # Ray's dashboard agents, log monitor; Python's resource tracker


class CpuSampler:
    """Snapshots of the descendants' CPU time every ``every_s`` seconds, in a daemon thread."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.root, self.every_s = os.getpid(), every_s
        self.snapshots: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.snapshots.append((time.time(), self._snapshot()))
            self._stop.wait(self.every_s)
        self.snapshots.append((time.time(), self._snapshot()))

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (s := _stat(int(entry))) is not None:
                stats[int(entry)] = s
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = {}, [(self.root, "")]
        while todo:
            pid, parent_cmd = todo.pop()
            cmd = _cmdline(pid)
            out[pid] = (classify(pid, cmd, parent_cmd, self.root), stats[pid][1])
            todo.extend((c, cmd) for c in children.get(pid, []))
        return out

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds per group from the snapshot nearest ``t0`` to the one nearest ``t1``: each
        process's growth between consecutive snapshots counted in its group at the later one."""
        times = [t for t, _ in self.snapshots]
        i0 = min(range(len(times)), key=lambda i: abs(times[i] - t0))
        i1 = min(range(len(times)), key=lambda i: abs(times[i] - t1))
        spent = dict.fromkeys(GROUPS, 0.0)
        for (_, prev), (_, cur) in zip(self.snapshots[i0:i1], self.snapshots[i0 + 1:i1 + 1]):
            for pid, (group, cpu) in cur.items():
                spent[group] += max(0.0, cpu - prev[pid][1]) if pid in prev else 0.0
        return spent
