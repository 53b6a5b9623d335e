"""The exception tree of wrfbatch.

Every error that wrfbatch raises on purpose derives from :class:`WrfbatchError`.
The HTTP service maps each class to one status code (``http_status``) and one
error code (``code``), and the Cloudrun client raises the same classes from the
JSON error body, so a caller handles one tree whether it embeds the library or
talks to the service::

    WrfbatchError
    ├── ConfigError                 invalid configuration file or environment
    ├── InvalidInputError           a user-supplied name or value is invalid (400)
    │   └── NamelistError           namelist.input has one or more problems (422)
    ├── AuthenticationError         missing, invalid or revoked token (401)
    ├── PermissionDeniedError       the caller may not do this (403)
    ├── NotFoundError               no such run, file or version (404)
    ├── ConflictError               the run's state does not allow this (409)
    ├── PayloadTooLargeError        an upload is over the configured limit (413)
    ├── RateLimitError              too many requests for this token (429)
    ├── TransportError              the cluster could not be reached or used
    │   ├── HostKeyError            the SSH host key is unknown or has changed
    │   ├── SSHAuthenticationError  the cluster rejected the SSH key
    │   ├── ConnectionLostError     the connection failed or dropped (retryable)
    │   ├── RemoteCommandError      a remote command exited non-zero
    │   └── TransferError           an upload or download failed
    ├── SchedulerError              the batch system rejected or failed a request
    │   ├── SubmitError             sbatch rejected a job
    │   └── SchedulerUnavailableError  the controller does not respond (retryable, 503)
    └── StoreUnavailableError       the database is unreachable or locked (retryable, 503)

``retryable`` tells a caller whether the same request may succeed later
without a change on its side.
"""

from __future__ import annotations

from collections.abc import Sequence


class WrfbatchError(Exception):
    """Base class of every error that wrfbatch raises on purpose."""

    code = "internal_error"
    http_status = 500
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(WrfbatchError):
    """Invalid configuration, found when the configuration is loaded."""

    code = "invalid_config"


class InvalidInputError(WrfbatchError):
    """A user-supplied name or value is invalid; the message names it and the fix."""

    code = "invalid_input"
    http_status = 400


class NamelistError(InvalidInputError):
    """namelist.input has one or more problems, all listed in ``problems``."""

    code = "invalid_namelist"
    http_status = 422

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class AuthenticationError(WrfbatchError):
    """The request carries no token, or one that is unknown or revoked."""

    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(WrfbatchError):
    """The caller is known but may not perform this action."""

    code = "forbidden"
    http_status = 403


class NotFoundError(WrfbatchError):
    """No such run, file, cluster or WRF version."""

    code = "not_found"
    http_status = 404


class ConflictError(WrfbatchError):
    """The run's current state does not allow the request; the message names what to do next."""

    code = "conflict"
    http_status = 409


class PayloadTooLargeError(WrfbatchError):
    """An upload exceeds the configured size limit."""

    code = "payload_too_large"
    http_status = 413


class RateLimitError(WrfbatchError):
    """The token has used its request allowance; ``retry_after_s`` gives the seconds to wait."""

    code = "rate_limited"
    http_status = 429
    retryable = True

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransportError(WrfbatchError):
    """The cluster could not be reached, or a file or command on it failed."""

    code = "cluster_unavailable"
    http_status = 503

    def __init__(self, message: str, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class HostKeyError(TransportError):
    """The SSH server's host key is missing from known_hosts or does not match it."""

    code = "host_key_rejected"
    http_status = 502


class SSHAuthenticationError(TransportError):
    """The SSH server rejected the configured user or key."""

    code = "ssh_authentication_failed"
    http_status = 502


class ConnectionLostError(TransportError):
    """The connection could not be opened or dropped during an operation."""

    code = "cluster_unavailable"
    retryable = True


class RemoteCommandError(TransportError):
    """A command on the cluster exited with a non-zero status."""

    code = "remote_command_failed"
    http_status = 502

    def __init__(
        self, host: str, command: str, exit_code: int, stdout: str = "", stderr: str = ""
    ) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        stderr_tail = "\n".join(stderr.strip().splitlines()[-10:])
        message = (
            f"command failed on {host or 'localhost'}\n"
            f"  command: {command}\n"
            f"  exit code: {exit_code}\n"
            f"  stderr: {stderr_tail or '(empty)'}"
        )
        super().__init__(message, host)


class TransferError(TransportError):
    """An upload or download failed, for a reason other than a dropped connection."""

    code = "transfer_failed"
    http_status = 502


class SchedulerError(WrfbatchError):
    """The batch system rejected a request or returned output that cannot be parsed."""

    code = "scheduler_error"
    http_status = 502


class SubmitError(SchedulerError):
    """sbatch (or the local scheduler) rejected a job; the message carries its reason."""

    code = "submit_rejected"
    http_status = 400


class SchedulerUnavailableError(SchedulerError):
    """The batch system's controller does not respond; the same request may work later."""

    code = "scheduler_unavailable"
    http_status = 503
    retryable = True


class StoreUnavailableError(WrfbatchError):
    """The database could not be reached, or stayed locked past the busy timeout."""

    code = "store_unavailable"
    http_status = 503
    retryable = True


#: Classes by their ``code``, so that the Cloudrun client can raise the class the
#: service raised. Where codes are shared, the first class listed is the one raised.
ERROR_CLASSES_BY_CODE: dict[str, type[WrfbatchError]] = {}
for _cls in (
    WrfbatchError,
    ConfigError,
    InvalidInputError,
    NamelistError,
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    ConflictError,
    PayloadTooLargeError,
    RateLimitError,
    ConnectionLostError,
    TransportError,
    HostKeyError,
    SSHAuthenticationError,
    RemoteCommandError,
    TransferError,
    SchedulerError,
    SubmitError,
    SchedulerUnavailableError,
    StoreUnavailableError,
):
    ERROR_CLASSES_BY_CODE.setdefault(_cls.code, _cls)
