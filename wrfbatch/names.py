"""Validation of names and values before they reach a shell, a template or a path.

Every user-supplied or configured value that ends up in a batch script, a
remote command or a file name passes one of these checks first. Quoting
(``shlex.quote``) is applied on top, never instead.
"""

from __future__ import annotations

import posixpath
import re

from .errors import InvalidInputError

# Slurm partition, account and QOS names, module names and similar identifiers.
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_RUN_ID = re.compile(r"^[a-z0-9]{8,32}$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){1,3}$")
# Upload names: a plain file name, no directory part, no leading dot or dash.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+=-]{0,254}$")
MAX_FILE_NAME_LENGTH = 255


def check_slurm_name(value: str, what: str) -> str:
    """Validate a partition, account, QOS or module name."""
    if not isinstance(value, str) or not _SLURM_NAME.match(value):
        raise InvalidInputError(
            f"invalid {what} {value!r}: use 1 to 64 letters, digits, '_', '.', '+' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_env_name(value: str) -> str:
    """Validate an environment variable name."""
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise InvalidInputError(
            f"invalid environment variable name {value!r}: use letters, digits and '_', "
            "not starting with a digit"
        )
    return value


def check_env_value(name: str, value: str) -> str:
    """Validate an environment variable value: any text on one line, without NUL."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise InvalidInputError(
            f"invalid value for environment variable {name}: it contains a newline or NUL "
            "character; put the value on one line"
        )
    return value


def check_run_id(value: str) -> str:
    """Validate a run id (lower-case letters and digits, 8 to 32 characters)."""
    if not isinstance(value, str) or not _RUN_ID.match(value):
        raise InvalidInputError(
            f"invalid run id {value!r}: a run id has 8 to 32 lower-case letters and digits"
        )
    return value


def check_version(value: str) -> str:
    """Validate the form of a WRF version such as ``3.9`` or ``4.5.2``."""
    if not isinstance(value, str) or not _VERSION.match(value):
        raise InvalidInputError(
            f"invalid WRF version {value!r}: write it as digits and dots, for example '3.9'"
        )
    return value


def check_file_name(value: str) -> str:
    """Validate an uploaded file's name: one path component, no hidden or special names."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError("missing file name: give every uploaded file a name")
    if len(value) > MAX_FILE_NAME_LENGTH:
        raise InvalidInputError(
            f"invalid file name {value[:40]!r}...: it has {len(value)} characters, "
            f"at most {MAX_FILE_NAME_LENGTH} are allowed"
        )
    if "/" in value or "\\" in value or value in (".", ".."):
        raise InvalidInputError(
            f"invalid file name {value!r}: upload a plain file name without directories"
        )
    if not _FILE_NAME.match(value):
        raise InvalidInputError(
            f"invalid file name {value!r}: use letters, digits and '_', '.', ':', '+', '=', '-', "
            "starting with a letter, digit or '_'"
        )
    return value


def check_remote_path(value: str, what: str) -> str:
    """Validate an absolute POSIX path on the cluster (no NUL, newline or '..' parts)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidInputError(f"invalid {what} {value!r}: give an absolute path")
    if "\0" in value or "\n" in value or "\r" in value:
        raise InvalidInputError(f"invalid {what} {value!r}: it contains a control character")
    if ".." in value.split("/"):
        raise InvalidInputError(f"invalid {what} {value!r}: '..' is not allowed in the path")
    return posixpath.normpath(value)
