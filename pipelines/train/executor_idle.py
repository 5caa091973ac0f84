"""Ray Data's streaming executor, made to wait instead of spin while it has nothing running.

The executor's control loop (in each training stream's split coordinator) waits in ``ray.wait``
only while some task of its dataset runs. When every operator is held back (the training workers
have not yet taken what was decoded ahead, the usual state on a CPU-bound run) it has no task to
wait on and loops without pause: on the 2-core demo one coordinator took ~75% of a core beside a
training worker at the same share (issue 20). :class:`IdleBackoff`, one of the streams' execution
callbacks (see ``pipelines.train.data.training_datasets``), sleeps for ``IDLE_SLEEP_S`` in a step that
found no task running; a block the workers free is refilled that much later, which the workers'
prefetched batches cover.
"""

from __future__ import annotations

import time
from typing import Any

from ray.data._internal.execution.execution_callback import ExecutionCallback

IDLE_SLEEP_S = 0.05


class IdleBackoff(ExecutionCallback):
    """Sleeps ``IDLE_SLEEP_S`` after a scheduling step in which no operator had a task running."""

    def on_execution_step(self, executor: Any) -> None:
        topology = getattr(executor, "_topology", None)  # Ray's own field; without it, no change
        if topology and not any(op.num_active_tasks() for op in topology):
            time.sleep(IDLE_SLEEP_S)
