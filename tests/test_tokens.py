from __future__ import annotations

import time

import pytest
from django.core import signing

from events.tokens import SALT, TokenError, granted_channels, make_token, read_token


def test_round_trip_grants_the_named_channels() -> None:
    token = make_token(["orders", "user-7", "orders"], ttl=60)
    assert granted_channels(token) == {"orders", "user-7"}


@pytest.mark.parametrize(
    ("channels", "ttl", "message"),
    [
        ([], 60, "at least one channel"),
        (["bad name"], 60, "may only contain"),
        (["ok"], 0, "ttl must be a positive"),
        (["ok"], float("inf"), "ttl must be a positive"),
        (["ok"], float("nan"), "ttl must be a positive"),
    ],
    ids=["none", "bad-name", "zero-ttl", "infinite-ttl", "nan-ttl"],
)
def test_make_token_rejects_bad_input(channels, ttl, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_token(channels, ttl=ttl)


def test_expired_token() -> None:
    token = signing.dumps({"c": ["a"], "e": int(time.time()) - 1}, salt=SALT)
    with pytest.raises(TokenError, match="expired"):
        granted_channels(token)


def test_tampered_token() -> None:
    token = make_token(["a"])
    payload, _, signature = token.rpartition(":")
    forged = signing.dumps({"c": ["a", "private-all"], "e": int(time.time()) + 60}, salt=SALT)
    with pytest.raises(TokenError, match="invalid"):
        granted_channels(forged.rpartition(":")[0] + ":" + signature)
    with pytest.raises(TokenError, match="invalid"):
        granted_channels(token + "x")


def test_token_signed_for_another_purpose_is_refused() -> None:
    token = signing.dumps({"c": ["a"], "e": int(time.time()) + 60})  # default salt
    with pytest.raises(TokenError, match="invalid"):
        granted_channels(token)


@pytest.mark.parametrize("token", ["", "x" * 9000, "::::", "\x00"], ids=["empty", "huge", "colons", "nul"])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenError):
        granted_channels(token)


@pytest.mark.parametrize(
    "payload",
    [["a"], {"c": "a", "e": 1 << 40}, {"c": ["a"]}, {"c": ["a"], "e": "never"}],
    ids=["list", "channels-not-list", "no-expiry", "expiry-not-int"],
)
def test_validly_signed_but_wrong_shape(payload) -> None:
    with pytest.raises(TokenError, match="malformed"):
        granted_channels(signing.dumps(payload, salt=SALT))


def test_read_token_tells_until_when() -> None:
    before = time.time()
    grant = read_token(make_token(["a", "b"], ttl=60))
    assert grant.channels == {"a", "b"}
    assert before + 59 <= grant.expires <= time.time() + 60
