"""parse_stream_request: what a stream request asks for, or the 400 that says what is
wrong with it. Pure: no Redis, no database."""

from __future__ import annotations

import pytest

from events.rejection import Rejection
from events.stream_request import ID_BYTES_PER_CHANNEL, channel_list_error, parse_stream_request
from tests.streams import http_scope


def scope(path: str = "/events/", query: bytes = b"", headers=None, method: str = "GET", channel=None):
    result = http_scope(path, query, headers, method)
    result["url_route"] = {"args": (), "kwargs": {"channel": channel or ""}}
    return result


def rejected(s) -> Rejection:
    with pytest.raises(Rejection) as caught:
        parse_stream_request(s)
    assert caught.value.status == 400
    return caught.value


def test_a_path_channel() -> None:
    request = parse_stream_request(scope("/events/orders/", channel="orders"))
    assert request.channels == ("orders",)
    assert (request.resume, request.token, request.origin, request.head) == ("", None, None, False)
    assert request.client == "127.0.0.1"


def test_query_channels_keep_their_order_without_repeats() -> None:
    request = parse_stream_request(scope(query=b"channel=b&channel=a&channel=b"))
    assert request.channels == ("b", "a")


def test_no_channel_is_400() -> None:
    assert "no channel requested" in rejected(scope()).reason


def test_too_many_channels_and_bad_names_are_400(settings) -> None:
    settings.EVENTS_MAX_CHANNELS_PER_STREAM = 2
    query = b"channel=a&channel=b&channel=c"
    assert rejected(scope(query=query)).reason == "3 channels requested; at most 2 per stream"
    assert "may only contain" in rejected(scope(query=b"channel=a%20b")).reason
    # Undecodable bytes are no valid name.
    assert "may only contain" in rejected(scope(query=b"channel=%FF")).reason


def test_the_feed_page_applies_the_same_rules_in_the_same_words(settings) -> None:
    settings.EVENTS_MAX_CHANNELS_PER_STREAM = 2
    assert channel_list_error(["a", "b"]) is None
    assert channel_list_error(["a", "b", "c"]) == "3 channels requested; at most 2 per stream"
    assert channel_list_error(["a", "no way"]) == rejected(scope(query=b"channel=a&channel=no+way")).reason


def test_host_outside_allowed_hosts_is_400(settings) -> None:
    settings.ALLOWED_HOSTS = ["example.com"]
    s = scope(query=b"channel=a")
    assert "invalid Host header 'testserver'" in rejected(s).reason
    s["headers"] = [(b"host", b"example.com:8000")]
    assert parse_stream_request(s).channels == ("a",)


def test_forwarded_host_counts_only_when_the_setting_says_so(settings) -> None:
    settings.ALLOWED_HOSTS = ["example.com"]
    s = scope(query=b"channel=a", headers=[(b"x-forwarded-host", b"example.com")])
    rejected(s)
    settings.USE_X_FORWARDED_HOST = True
    assert parse_stream_request(s).channels == ("a",)


def test_resume_id_from_the_header_first_then_the_query() -> None:
    s = scope(query=b"channel=a&last_event_id=a:3")
    assert parse_stream_request(s).resume == "a:3"
    s["headers"].append((b"Last-Event-ID", b"a:5"))
    assert parse_stream_request(s).resume == "a:5"


def test_resume_id_longer_than_any_this_server_hands_out_is_400(settings) -> None:
    settings.EVENTS_MAX_CHANNELS_PER_STREAM = 2
    longest = "x" * (2 * ID_BYTES_PER_CHANNEL)
    assert parse_stream_request(scope(query=b"channel=a", headers=[(b"last-event-id", longest.encode())]))
    too_long = [(b"last-event-id", longest.encode() + b"x")]
    assert "Last-Event-ID is longer" in rejected(scope(query=b"channel=a", headers=too_long)).reason


def test_token_from_the_query_or_a_bearer_header() -> None:
    assert parse_stream_request(scope(query=b"channel=a&token=t1")).token == "t1"
    bearer = [(b"authorization", b"Bearer  t2 ")]
    assert parse_stream_request(scope(query=b"channel=a", headers=bearer)).token == "t2"
    # The query wins; other schemes are no token.
    assert parse_stream_request(scope(query=b"channel=a&token=t1", headers=bearer)).token == "t1"
    basic = [(b"authorization", b"Basic dTpw")]
    assert parse_stream_request(scope(query=b"channel=a", headers=basic)).token is None


def test_origin_head_and_no_client() -> None:
    s = scope(query=b"channel=a", headers=[(b"origin", b"https://caf\xe9.example")], method="HEAD")
    del s["client"]
    request = parse_stream_request(s)
    assert (request.origin, request.head, request.client) == ("https://caf\u00e9.example", True, None)
