"""The wire parser: its readers, where a fast path stands in for the general one,
its NUL scrubbing and its JSON depth limit. Pure: no database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import WireError
from syncd.shoperti import wire
from tests.factories import nested


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


# --- the order's money and shipping lists ---------------------------------------------

MINIMAL = {"id": "o1"}


def _order(**lists: object) -> wire.Order:
    return wire.parse_order({**MINIMAL, **lists}, "data")


def _refused(**lists: object) -> str:
    with pytest.raises(WireError) as caught:
        _order(**lists)
    return str(caught.value)


def test_absent_or_null_lists_are_empty() -> None:
    for value in ({}, {"transactions": None, "refunds": None}):
        order = _order(**value)
        lists = (order.transactions, order.refunds, order.fulfillments, order.discount_codes)
        assert lists == ((), (), (), ())


def test_transactions_read_tolerantly() -> None:
    (paid, pending) = _order(
        transactions=[
            {
                "id": 77,
                "kind": "sale",
                "status": "success",
                "gateway": "conekta",
                "payment_method": "card",
                "amount": 1259.5,
                "currency": "mxn",
                "authorization": "AUTH-1",
                "error_code": None,
                "created_at": "2026-11-27T18:04:05-06:00",
                "processed_at": "2026-11-28T00:04:06",
                "extra": "kept in raw",
            },
            {"kind": "sale", "status": "pending", "amount": "10.00", "processed_at": None},
        ]
    ).transactions
    assert paid.id == "77" and paid.amount == Decimal("1259.5") and paid.currency == "MXN"
    assert (
        paid.created_at is not None and paid.created_at.isoformat() == "2026-11-28T00:04:05+00:00"
    )
    assert paid.processed_at is not None and paid.processed_at.isoformat().endswith("+00:00")
    assert pending.id == "2" and pending.processed_at is None and pending.gateway is None


def test_refunds_and_their_lines() -> None:
    (refund,) = _order(
        refunds=[
            {
                "id": "r1",
                "created_at": "2026-11-28T01:00:00Z",
                "amount": "100.50",
                "restock": "true",
                "note": None,
                "line_items": [{"line_item_id": 5, "quantity": "2", "amount": 80}],
            }
        ]
    ).refunds
    assert refund.amount == Decimal("100.50") and refund.restock is True
    assert refund.line_items == (wire.RefundLineItem("5", 2, Decimal(80)),)
    (amount_only,) = _order(refunds=[{"id": "r2", "amount": 1}]).refunds
    assert amount_only.line_items == () and amount_only.restock is None


def test_fulfillments_and_discount_codes() -> None:
    order = _order(
        fulfillments=[
            {
                "id": "f1",
                "status": "success",
                "tracking_company": "Estafeta",
                "tracking_number": 123456789,
                "tracking_url": None,
                "line_items": [{"line_item_id": "li1", "quantity": 1}],
            }
        ],
        discount_codes=[{"code": " BUENFIN ", "type": "percentage", "amount": "50.00"}],
    )
    (shipment,) = order.fulfillments
    assert shipment.tracking_number == "123456789"
    assert shipment.line_items == (wire.FulfillmentLineItem("li1", 1),)
    assert order.discount_codes == (wire.DiscountCode("BUENFIN", "percentage", Decimal("50.00")),)


def test_malformed_values_name_their_field() -> None:
    assert _refused(transactions=[{"id": "t", "amount": "1,00"}]) == (
        "data.transactions[0].amount: not a decimal amount"
    )
    assert _refused(refunds=[{"id": "r", "created_at": "yesterday"}]) == (
        "data.refunds[0].created_at: not an ISO 8601 timestamp"
    )
    assert _refused(refunds=[{"id": "r", "line_items": [{"quantity": 1}]}]) == (
        "data.refunds[0].line_items[0].line_item_id: missing"
    )
    assert _refused(fulfillments={"id": "f"}) == "data.fulfillments: expected a list"
    assert _refused(discount_codes=["X"]) == "data.discount_codes[0]: expected an object"
    assert _refused(discount_codes=[{"amount": 1}]) == "data.discount_codes[0].code: missing"


def test_the_same_id_twice_is_refused() -> None:
    assert _refused(transactions=[{"id": "t"}, {"id": "t"}]) == (
        "data.transactions: the same id appears twice"
    )
    assert _refused(refunds=[{"id": 1}, {"id": "1"}]) == "data.refunds: the same id appears twice"
    assert _refused(fulfillments=[{"id": "f"}, {"id": "f"}]) == (
        "data.fulfillments: the same id appears twice"
    )
    assert _refused(
        refunds=[{"id": "r", "line_items": [{"line_item_id": "a"}, {"line_item_id": "a"}]}]
    ) == ("data.refunds[0].line_items: the same line_item_id appears twice")
    assert _refused(discount_codes=[{"code": "A"}, {"code": "A"}]) == (
        "data.discount_codes: the same code appears twice"
    )


time_spellings = st.one_of(
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda moment: moment.isoformat()),
    st.from_regex(r"\A ?[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]{2,15})?(Z|[+-][0-9:]{2,5})? ?\Z"),
    st.text(max_size=12),
    st.none(),
    st.integers(),
)


@given(time_spellings)
def test_list_times_read_as_the_general_reader_reads_them(value: object) -> None:
    fast = _read(lambda v, field: wire._time_at({"t": v}, "t", "x"), value)
    general = _read(lambda v, field: wire.timestamp(v, "x.t"), value)
    assert fast == general


@given(st.one_of(amount_spellings, st.none(), st.integers(), st.floats(allow_nan=False)))
def test_list_amounts_read_as_the_general_reader_reads_them(value: object) -> None:
    fast = _read(lambda v, field: wire._money_at({"a": v}, "a", "x"), value)
    general = _read(lambda v, field: wire.money(v, "x.a"), value)
    assert fast == general


@given(st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.floats()))
def test_list_texts_and_ids_read_as_the_general_readers_read_them(value: object) -> None:
    for fast_read, general_read in (
        (wire._text_at, wire.text),
        (wire._id_at, wire.ident),
    ):
        fast = _read(lambda v, field: fast_read({"k": v}, "k", "x"), value)  # noqa: B023
        general = _read(lambda v, field: general_read(v, "x.k"), value)  # noqa: B023
        assert fast == general


def test_nul_scrubbing_changes_only_nul_characters() -> None:
    clean = {"note": "sin nulos", "n": [1, 2.5, None, True]}
    assert wire.scrub_nul(clean) is clean  # nothing to replace: the very same object
    # A backslash followed by "u0000" is six ordinary characters, kept as they are.
    literal = {"note": "C:\\u0000 is six characters"}
    assert wire.scrub_nul(literal) == {"note": "C:\\u0000 is six characters"}
    # Integers beyond 64 bits are not plain JSON for the fast check: walked instead.
    walked = {"big": 2**70, "deep": [{"k\u0000": "v\u0000"}]}
    assert wire.scrub_nul(walked) == {"big": 2**70, "deep": [{"k\ufffd": "v\ufffd"}]}
    assert wire.scrub_nul(["\u0000", "x"]) == ["\ufffd", "x"]
    assert wire.scrub_nul("a\u0000") == "a\ufffd"


def test_json_depth_limits() -> None:
    assert wire.json_depth(nested(3)) == 3
    assert wire.json_depth({"a": [1, {"b": []}], "c": {}}) == 4
    assert wire.unstorable(nested(wire.MAX_JSON_DEPTH)) is None
    reason = wire.unstorable(nested(wire.MAX_JSON_DEPTH + 1))
    assert reason is not None and str(wire.MAX_JSON_DEPTH) in reason
