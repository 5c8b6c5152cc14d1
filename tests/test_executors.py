"""Choosing where agents run: `--executor` parsed, and a Dask scheduler probed before a job."""

from __future__ import annotations

import pytest

from prodigy.errors import UsageError
from prodigy.executors import LOCAL, ExecutorChoice, parse_executor
from prodigy.executors.dask import probe


def test_local_and_dask_addresses() -> None:
    assert parse_executor("local") == LOCAL
    assert parse_executor("dask://127.0.0.1:8786") == ExecutorChoice("dask", "tcp://127.0.0.1:8786")


# Ports past 65535 were taken modulo 65536 by getaddrinfo, and `٣` (a digit to \d) as port 3.
@pytest.mark.parametrize(
    "text", ["ray://h:1", "dask://h", "dask://", "Local", "dask://h:99999", "dask://h:٣"]
)
def test_anything_else_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="use local or dask://HOST:PORT"):
        parse_executor(text)


# Found by fuzzing (tests/fuzz): socket.create_connection raises UnicodeError, not OSError, for
# a host name IDNA cannot encode, and it escaped as an internal error.
@pytest.mark.parametrize("host", ["..", "a" * 64])
def test_a_host_name_idna_cannot_encode_is_a_usage_error(host: str) -> None:
    with pytest.raises(UsageError, match="has no valid host name"):
        probe(f"tcp://{host}:1")
