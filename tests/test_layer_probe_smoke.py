from __future__ import annotations

import uuid

import pytest

from events import send_event
from tests.layer_probe import GroupListener


@pytest.mark.django_db(transaction=True)
def test_send_event_reaches_the_group() -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    with GroupListener(name) as listener:
        event = send_event(name, {"a": 1}, event="t")
        [message] = listener.messages(count=1, timeout=3)
    assert message == {"type": "events.event", "channel": name, "seq": event.seq, "event": "t", "data": '{"a":1}'}
