"""Imported by every worker process of the local Ray instance as it starts (Ray's
``preload_python_modules``, set by :func:`pipelines.stages.ensure_ray`): quiets what would
flood the console of a dashboard-less instance. Imports nothing heavy: every worker pays for it.
"""

from __future__ import annotations

import logging

# Loggers of Ray actors that poll the State API, which lives in the dashboard.
STATE_API_POLLERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_state_api_pollers() -> None:
    """Ray Train's ``PlacementGroupCleaner`` asks the State API every second whether the
    controller still lives and, with no dashboard to answer, warns each time: hundreds of lines
    over a demo. On a local instance it has nothing to guard (the instance, placement groups and
    all, ends with the driver), so only its errors are shown. A filter, not a level: Ray Train's
    logging setup (``logging.config.dictConfig``) resets the levels of its loggers' children."""
    for name in STATE_API_POLLERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
            logger.addFilter(_ErrorsOnly())


quiet_state_api_pollers()
