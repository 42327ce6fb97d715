"""events/admission.py: the per-client and per-process stream limits, one counter type
for set-ups and open streams. Pure: no Redis, no database."""

from __future__ import annotations

import pytest

from events import admission
from events.admission import ClientCounts, Ticket
from events.rejection import Rejection


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    monkeypatch.setattr(admission, "setting_up", ClientCounts())
    monkeypatch.setattr(admission, "open_streams", ClientCounts())


def refusal(step) -> Rejection:
    with pytest.raises(Rejection) as caught:
        step()
    return caught.value


def test_client_counts_forget_idle_clients() -> None:
    counts = ClientCounts()
    counts.add("a")
    counts.add("a")
    counts.add(None)
    assert (counts.total, counts.held_by("a"), counts.held_by("b")) == (3, 2, 0)
    counts.remove("a")
    counts.remove("a")
    counts.remove(None)
    assert counts.total == 0
    assert not counts._by_client


def test_setups_per_client_are_capped(settings) -> None:
    settings.EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = 2
    first, second, third = Ticket("a"), Ticket("a"), Ticket("a")
    first.begin_setup()
    second.begin_setup()
    refused = refusal(third.begin_setup)
    assert (refused.status, refused.retry_after) == (429, admission.SETUP_RETRY_AFTER_SECONDS)
    assert "being set up at once from a (at most 2)" in refused.reason
    Ticket("b").begin_setup()  # another client is not held up
    first.end_setup()
    first.end_setup()  # given back once only
    third.begin_setup()
    assert admission.setting_up.held_by("a") == 2


def test_setup_limit_off_or_no_address_counts_nothing(settings) -> None:
    settings.EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = 0
    Ticket("a").begin_setup()
    settings.EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = 1
    Ticket(None).begin_setup()
    assert admission.setting_up.total == 0


def test_open_streams_per_client(settings) -> None:
    settings.EVENTS_MAX_STREAMS_PER_CLIENT = 1
    settings.EVENTS_MAX_STREAMS_PER_PROCESS = 10
    first = Ticket("a")
    first.admit()
    refused = refusal(Ticket("a").admit)
    assert (refused.status, refused.retry_after) == (429, admission.STREAMS_FULL_RETRY_AFTER)
    assert refused.reason == "too many open streams from a (at most 1)"
    first.release()
    first.release()
    Ticket("a").admit()
    assert (admission.open_streams.total, admission.open_streams.held_by("a")) == (1, 1)


def test_open_streams_per_process(settings, caplog) -> None:
    settings.EVENTS_MAX_STREAMS_PER_CLIENT = 0  # the per-client limit off: still counted in all
    settings.EVENTS_MAX_STREAMS_PER_PROCESS = 2
    tickets = [Ticket("a"), Ticket(None)]
    for ticket in tickets:
        ticket.admit()
    refused = refusal(Ticket("b").admit)
    assert (refused.status, refused.retry_after) == (503, admission.STREAMS_FULL_RETRY_AFTER)
    assert "refusing streams: 2 open" in caplog.text
    tickets[0].release()
    Ticket("b").admit()


def test_release_gives_back_the_setup_too(settings) -> None:
    settings.EVENTS_MAX_PENDING_SETUPS_PER_CLIENT = 5
    ticket = Ticket("a")
    ticket.begin_setup()
    ticket.admit()
    ticket.release()
    assert (admission.setting_up.total, admission.open_streams.total) == (0, 0)


def test_the_descriptor_limit_is_read_once(settings, monkeypatch) -> None:
    settings.EVENTS_MAX_STREAMS_PER_PROCESS = None
    admission._descriptor_capacity.cache_clear()
    reads = []
    monkeypatch.setattr(admission.fdlimit, "nofile_limits", lambda: reads.append(1) or (1000, 1000))
    try:
        assert admission.process_limit() == 1000 - 100
        assert admission.process_limit() == 1000 - 100
        assert reads == [1]
        settings.EVENTS_MAX_STREAMS_PER_PROCESS = 7  # the setting, when set, is read each time
        assert admission.process_limit() == 7
    finally:
        admission._descriptor_capacity.cache_clear()
