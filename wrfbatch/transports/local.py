"""The local transport: commands and files on this machine, with the SSH transport's contract."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConnectionLostError, RemoteCommandError, TransferError
from .base import (
    CommandResult,
    ProgressCallback,
    RemoteFile,
    TransferResult,
    Transport,
    check_removable_path,
)

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1024 * 1024


def file_sha256(path: Path, chunk_bytes: int = _CHUNK_BYTES) -> str:
    """Return the SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class LocalTransport(Transport):
    """Runs commands with ``/bin/sh -c`` and copies files on this machine."""

    host = "localhost"

    def run(
        self,
        command: str | Sequence[str],
        *,
        check: bool = True,
        timeout_s: float | None = None,
        stdin: bytes | None = None,
        idempotent: bool = False,
    ) -> CommandResult:
        # idempotent only matters for a dropped connection, which a local command cannot have.
        shell_command = self.join(command)
        logger.debug("local command: %s", shell_command)
        exit_code, stdout, stderr = self._run_shell(shell_command, timeout_s, stdin)
        result = CommandResult(
            command=shell_command,
            exit_code=exit_code,
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
        )
        if check and result.exit_code != 0:
            raise RemoteCommandError(
                self.host, shell_command, result.exit_code, result.stdout, result.stderr
            )
        return result

    def _run_shell(
        self, shell_command: str, timeout_s: float | None, stdin: bytes | None
    ) -> tuple[int, bytes, bytes]:
        """Run ``/bin/sh -c`` in its own session, so a timeout kills the whole process group.

        Killing only the shell would leave its children holding the output
        pipes, and reading them would then wait for those children to exit.
        """
        with subprocess.Popen(
            ["/bin/sh", "-c", shell_command],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(stdin, timeout=timeout_s)
            except subprocess.TimeoutExpired as exc:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                raise ConnectionLostError(
                    f"command timed out after {timeout_s} s on localhost: {shell_command}",
                    self.host,
                ) from exc
        return process.returncode, stdout, stderr

    def upload(
        self, local_path: Path, remote_path: str, *, progress: ProgressCallback | None = None
    ) -> TransferResult:
        return self._copy(Path(local_path), Path(remote_path), progress)

    def download(
        self, remote_path: str, local_path: Path, *, progress: ProgressCallback | None = None
    ) -> TransferResult:
        return self._copy(Path(remote_path), Path(local_path), progress)

    def _copy(
        self, source: Path, destination: Path, progress: ProgressCallback | None
    ) -> TransferResult:
        """Copy through a temporary name in the destination directory, then rename."""
        try:
            size = source.stat().st_size
            sha256 = file_sha256(source)
            if destination.is_file() and destination.stat().st_size == size:
                if file_sha256(destination) == sha256:
                    return TransferResult(str(source), str(destination), size, sha256, True, 0)
            destination.parent.mkdir(parents=True, exist_ok=True)
            moved = self._copy_to_temporary(source, destination, size, progress)
        except OSError as exc:
            raise TransferError(
                f"copying {source} to {destination} failed: {exc.strerror or exc}", self.host
            ) from exc
        return TransferResult(str(source), str(destination), size, sha256, False, moved)

    @staticmethod
    def _copy_to_temporary(
        source: Path, destination: Path, size: int, progress: ProgressCallback | None
    ) -> int:
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
        done = 0
        try:
            with open(handle, "wb") as out, source.open("rb") as src:
                while chunk := src.read(_CHUNK_BYTES):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, size)
            os.chmod(temporary, 0o644)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return done

    def read_bytes(self, remote_path: str, max_bytes: int | None = None) -> bytes:
        try:
            with open(remote_path, "rb") as handle:
                return handle.read() if max_bytes is None else handle.read(max_bytes)
        except OSError as exc:
            raise TransferError(f"reading {remote_path} failed: {exc.strerror}", self.host) from exc

    def write_bytes(self, remote_path: str, data: bytes, mode: int = 0o644) -> None:
        target = Path(remote_path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with open(handle, "wb") as out:
                out.write(data)
            os.chmod(temporary, mode)
            os.replace(temporary, target)
        except OSError as exc:
            raise TransferError(f"writing {remote_path} failed: {exc.strerror}", self.host) from exc

    def list_dir(self, remote_path: str) -> list[RemoteFile]:
        files = []
        try:
            with os.scandir(remote_path) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        info = entry.stat()
                        files.append(RemoteFile(entry.name, info.st_size, info.st_mtime))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TransferError(f"listing {remote_path} failed: {exc.strerror}", self.host) from exc
        return sorted(files, key=lambda f: f.name)

    def exists(self, remote_path: str) -> bool:
        return os.path.lexists(remote_path)

    def make_dirs(self, remote_path: str, mode: int = 0o755) -> None:
        try:
            os.makedirs(remote_path, mode=mode, exist_ok=True)
        except OSError as exc:
            raise TransferError(
                f"creating {remote_path} failed: {exc.strerror}", self.host
            ) from exc

    def remove_tree(self, remote_path: str) -> None:
        remote_path = check_removable_path(remote_path)
        try:
            shutil.rmtree(remote_path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TransferError(
                f"removing {remote_path} failed: {exc.strerror}", self.host
            ) from exc

    def close(self) -> None:
        """Nothing to close: the local transport keeps no connection open."""
