"""The wire parser's readers, where a fast path stands in for the general one."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import WireError
from syncd.shoperti import wire


def _read(read: object, value: object) -> str:
    try:
        return repr(read(value, "x"))  # type: ignore[operator]
    except WireError as exc:
        return f"WireError({exc})"


amount_spellings = st.one_of(
    st.from_regex(r"\A[ +-]?[0-9]{0,17}(\.[0-9]{0,6})?([eE][+-]?[0-9]{1,2})?[ ]?\Z"),
    st.text(alphabet="0123456789.-+eE_ n", max_size=20),
)


@given(amount_spellings)
def test_plain_amounts_read_as_the_general_reader_reads_them(value: str) -> None:
    # Same value, same exponent ("1.50" stays 1.50) and the same refusals.
    assert _read(wire.money, value) == _read(wire._amount, value)


def test_amounts_at_the_edges() -> None:
    assert wire.money("389.00", "x") == Decimal("389.00")
    assert str(wire.money("-0.0001", "x")) == "-0.0001"
    assert wire.money("999999999999999.9999", "x") == Decimal("999999999999999.9999")
    assert str(wire.money("1.50000", "x")) == "1.5"  # trailing zeros past 4 places dropped
    for refused in ("1000000000000000", "1.00001", "NaN", "1e400", "abc"):
        assert _read(wire.money, refused).startswith("WireError"), refused
