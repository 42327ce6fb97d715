from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events import broadcaster, metrics
from events.publish import send_event


class Command(BaseCommand):
    help = (
        "Publish an event: DATA is JSON, or else taken as a string; with --raw, DATA is text "
        "sent as is (an HTML fragment). Prints the event's id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channel")
        parser.add_argument("data", help="JSON payload; anything that is not JSON is sent as a string")
        parser.add_argument("--event", default="message", help="event type (default: message)")
        parser.add_argument(
            "--raw", action="store_true", help="send DATA as is, as text (e.g. HTML for htmx), not as JSON"
        )

    def handle(self, *args: Any, channel: str, data: str, event: str, raw: bool, **options: Any) -> None:
        payload = data if raw else self._payload(data)
        try:
            with metrics.publishing_via("command"):
                stored = send_event(channel, payload, event=event, raw=raw)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:
            raise CommandError(f"could not store the event: {exc}") from exc
        # The broadcast runs on the publisher thread: wait for it before the process
        # exits (the exit hook would too; this keeps a failure's log line before the id).
        broadcaster.flush(broadcaster.EXIT_FLUSH_SECONDS)
        self.stdout.write(stored.sse_id)

    def _payload(self, data: str) -> Any:
        try:
            # NaN and Infinity are not JSON: such DATA is a string like any non-JSON.
            payload = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            payload = data
            if data.lstrip()[:1] in ("{", "[", '"'):
                # Most likely a JSON typo: say so, but keep the documented behaviour.
                reason = exc.args[0] if isinstance(exc, ValueError) and exc.args else "nested too deeply"
                self.stderr.write(f"note: DATA is not valid JSON ({reason}); sending it as a string")
        return payload


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
