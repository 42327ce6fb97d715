"""events/access.py: subscribe token or read policy, decided in one place for the stream
and the views; and the bearer secrets of the publish endpoint and /metrics."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing

from events import access
from events.rejection import Rejection
from events.tokens import SALT, make_token


def test_bearer_token() -> None:
    assert access.bearer_token("Bearer abc") == "abc"
    assert access.bearer_token("bearer  abc ") == "abc"
    assert access.bearer_token("Bearer ") is None
    assert access.bearer_token("Basic abc") is None
    assert access.bearer_token("") is None


def test_secret_matches_only_a_configured_secret() -> None:
    assert access.secret_matches("s3cret", "s3cret")
    assert not access.secret_matches("s3cre", "s3cret")
    assert not access.secret_matches("", "")  # no secret configured: nothing matches


def test_a_token_grants_its_channels_until_its_expiry() -> None:
    before = int(time.time())
    expires = access.grant_expiry(make_token(["a", "b"], ttl=60), ["b"])
    assert before + 59 <= expires <= int(time.time()) + 60


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: make_token(["a"]), "the subscribe token does not grant channel 'b'"),
        (lambda: "garbage", "invalid subscribe token"),
        (lambda: signing.dumps({"c": ["a", "b"], "e": int(time.time()) - 1}, salt=SALT), "expired"),
    ],
    ids=["other-channel", "invalid", "expired"],
)
async def test_a_bad_token_is_403_without_asking_the_policy(token, reason, settings) -> None:
    settings.EVENTS_CHANNEL_POLICY = "tests.test_stream_access.no_policy"
    with pytest.raises(Rejection) as caught:
        await access.authorise_read({}, ["a", "b"], token())
    assert caught.value.status == 403
    assert reason in caught.value.reason


def no_policy(user, channel):
    raise AssertionError("a token request never asks the policy")


async def test_without_a_token_the_policy_decides() -> None:
    # Public channels under the default policy: no session is even loaded.
    assert await access.authorise_read({"headers": []}, ["a", "b"], None) is None


def deny_b(user, channel):
    return channel != "b"


@pytest.mark.django_db
async def test_policy_refusal_is_403_naming_the_channel(settings) -> None:
    settings.EVENTS_CHANNEL_POLICY = "tests.test_stream_access.deny_b"
    with pytest.raises(Rejection) as caught:
        await access.authorise_read({"headers": []}, ["a", "b"], None)
    assert (caught.value.status, caught.value.reason) == (403, "not allowed to read channel 'b'")


def test_unreadable_uses_the_configured_policy(settings) -> None:
    assert access.unreadable(AnonymousUser(), ["public", "private-ops", "user-1"]) == [
        "private-ops",
        "user-1",
    ]
    settings.EVENTS_CHANNEL_POLICY = "tests.test_stream_access.deny_b"
    assert access.unreadable(AnonymousUser(), ["a", "b"]) == ["b"]
