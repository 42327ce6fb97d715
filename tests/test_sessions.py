"""The session store refuses forged keys before they reach a query."""

from __future__ import annotations

import pytest
from django.test import Client

from events.sessions import SessionStore

pytestmark = pytest.mark.django_db

# Django's cookie parser turns the quoted octal escape into a real NUL byte.
NUL_COOKIE = 'sessionid="abcdefgh\\000ijkl"'


@pytest.mark.parametrize(
    "key",
    ["abcdefgh\x00ijkl", "ABCDEFGHIJKL", "short", "a" * 41, "abc def ghijk", "abcdefgh'--"],
    ids=["nul", "uppercase", "too-short", "too-long", "space", "quote"],
)
def test_forged_keys_are_no_session(key: str) -> None:
    store = SessionStore(key)
    assert store.session_key is None
    assert store.load() == {}


def test_a_real_session_still_loads() -> None:
    store = SessionStore()
    store["n"] = 1
    store.create()
    assert SessionStore(store.session_key).load() == {"n": 1}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", "/presence/", 403), ("post", "/events/orders/", 401), ("get", "/feed/?channel=user-1", 403)],
    ids=["presence", "publish", "feed-user-channel"],
)
def test_a_nul_in_the_session_cookie_is_no_session_not_500(method: str, path: str, status: int) -> None:
    """On PostgreSQL a NUL in the session key used to raise DataError ("cannot contain
    NUL") inside the session middleware: a 500 on every session-reading page."""
    response = getattr(Client(), method)(path, HTTP_COOKIE=NUL_COOKIE)
    assert response.status_code == status


def test_admin_login_page_with_a_nul_cookie() -> None:
    response = Client().get("/admin/", HTTP_COOKIE=NUL_COOKIE)
    assert response.status_code == 302
