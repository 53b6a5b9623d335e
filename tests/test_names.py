"""Validation of names and values before they reach a shell, a template or a path."""

from __future__ import annotations

import pytest

from wrfbatch import names
from wrfbatch.errors import InvalidInputError

HOSTILE = ["a;b", "$(id)", "`id`", "a b", "a\nb", "a'b", 'a"b', "-rf", "", "x" * 65, "a|b", "a&b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_slurm_name_rejects_shell_syntax(value):
    with pytest.raises(InvalidInputError, match="invalid partition"):
        names.check_slurm_name(value, "partition")


@pytest.mark.parametrize("value", ["debug", "gpu-a100", "long.q", "acct_42"])
def test_slurm_name_accepts_plain(value):
    assert names.check_slurm_name(value, "partition") == value


@pytest.mark.parametrize("value", ["../x", "/etc/passwd", "a/b", "..", ".", ".hidden", "-x",
                                   "a\0b", "a\nb", "a b", "x" * 256, "a;b", "$x"])
def test_file_name_rejects_hostile(value):
    with pytest.raises(InvalidInputError):
        names.check_file_name(value)


@pytest.mark.parametrize("value", ["namelist.input", "met_em.d01.2019-09-04_12:00:00.nc",
                                   "wrfrst_d01_2019-09-04_12_00_00", "input_sounding"])
def test_file_name_accepts_wrf_names(value):
    assert names.check_file_name(value) == value


@pytest.mark.parametrize("value", ["relative", "/a/../b", "/a\nb", "/a\0b"])
def test_remote_path_rejects_hostile(value):
    with pytest.raises(InvalidInputError):
        names.check_remote_path(value, "work_root")


@pytest.mark.parametrize("value", ["ABC", "ABCDEF123456", "abc", "abcdef12345!"])
def test_run_id_rejects_malformed(value):
    with pytest.raises(InvalidInputError):
        names.check_run_id(value)


@pytest.mark.parametrize("value", ["3", "3.9a", "", "3..9", "4.5.2.1.1"])
def test_version_rejects_malformed(value):
    with pytest.raises(InvalidInputError):
        names.check_version(value)


def test_env_value_rejects_newline():
    with pytest.raises(InvalidInputError, match="newline"):
        names.check_env_value("X", "a\nb")
