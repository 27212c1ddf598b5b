"""Memory quantities as the node stand-in reads them for its memory cgroups."""

from __future__ import annotations

import pytest
from node_standin.cgroups import parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64Mi", 64 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("128974848", 128974848),
     ("1e9", 10**9), ("1.5Gi", 3 * 2**29), ("2k", 2000), ("3Ki", 3072)],
)  # fmt: skip
def test_quantities(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "64MB", "-1Mi", "Mi", "1 Gi x"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a memory quantity"):
        parse_bytes(text)
