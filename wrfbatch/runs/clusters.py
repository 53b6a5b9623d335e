"""One transport and one scheduler per configured cluster, shared by every caller."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ..config import ClusterConfig, Settings
from ..schedulers import make_scheduler
from ..schedulers.base import Scheduler
from ..transports import make_transport
from ..transports.base import Transport

logger = logging.getLogger(__name__)


@dataclass
class ClusterHandle:
    """A configured cluster with its open transport and its scheduler."""

    name: str
    config: ClusterConfig
    transport: Transport
    scheduler: Scheduler

    def run_dir(self, run_id: str) -> str:
        """Return the run directory of a run on this cluster."""
        return f"{self.config.work_root.rstrip('/')}/{run_id}"


class ClusterRegistry:
    """Creates each cluster's transport and scheduler once, on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._handles: dict[str, ClusterHandle] = {}
        self._lock = threading.Lock()

    def get(self, name: str | None = None) -> ClusterHandle:
        """Return the named cluster (the default one for None); ConfigError when unknown."""
        name, config = self._settings.cluster(name)
        with self._lock:
            handle = self._handles.get(name)
            if handle is None:
                transport = make_transport(config, name)
                handle = ClusterHandle(name, config, transport, make_scheduler(config, transport))
                self._handles[name] = handle
                logger.debug("cluster %s: %s transport, %s scheduler", name, config.transport,
                             config.scheduler)
            return handle

    def names(self) -> list[str]:
        return list(self._settings.clusters)

    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                handle.transport.close()
            self._handles.clear()
