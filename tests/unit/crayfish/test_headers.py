"""The one header lookup (crayfish.headers) every reader of a Kafka header uses."""

from crayfish.headers import header_value


def test_first_header_of_the_name_wins():
    headers = [("a", b"1"), ("traceparent", b"00-x"), ("traceparent", b"00-y")]
    assert header_value(headers, "traceparent") == b"00-x"
    assert header_value(headers, "a") == b"1"


def test_missing_name_or_no_headers_is_none():
    assert header_value([("a", b"1")], "b") is None
    assert header_value(None, "a") is None
    assert header_value([], "a") is None
