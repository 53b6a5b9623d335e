"""Transports run commands and move files on a cluster: over SSH, or on this machine."""

from __future__ import annotations

import threading

from ..config import ClusterConfig
from .base import CommandResult, RemoteFile, TransferResult, Transport, check_removable_path
from .local import LocalTransport
from .ssh import SSHTransport

__all__ = [
    "CommandResult",
    "LocalTransport",
    "RemoteFile",
    "SSHTransport",
    "TransferResult",
    "Transport",
    "check_removable_path",
    "close_transports",
    "make_transport",
]

_registry_lock = threading.Lock()
_ssh_transports: dict[str, SSHTransport] = {}


def make_transport(cluster_config: ClusterConfig, name: str | None = None) -> Transport:
    """Return the transport of a cluster.

    SSH transports are shared: every call with the same cluster ``name``
    returns the same SSHTransport and so the same connection, until the
    cluster's SSH settings change. Without a name, the user, host and port
    identify the cluster.
    """
    if cluster_config.transport == "local":
        return LocalTransport()
    ssh = cluster_config.ssh
    assert ssh is not None  # ClusterConfig requires [ssh] for transport "ssh"
    key = name or f"{ssh.user}@{ssh.host}:{ssh.port}"
    with _registry_lock:
        existing = _ssh_transports.get(key)
        if existing is not None and existing.config == ssh:
            return existing
        if existing is not None:
            existing.close()
        transport = _ssh_transports[key] = SSHTransport(ssh)
        return transport


def close_transports() -> None:
    """Close and forget every shared SSH transport, as the service does when it stops."""
    with _registry_lock:
        transports = list(_ssh_transports.values())
        _ssh_transports.clear()
    for transport in transports:
        transport.close()
