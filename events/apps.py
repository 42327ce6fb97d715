from __future__ import annotations

from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Live events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from events import accesslog, checks  # noqa: F401  (checks: registers the system checks)
        from events.fdlimit import raise_soft_limit
        from events.reauth import on_user_logged_out

        # At start, in every process that serves streams: the per-process stream cap
        # (events/fdlimit.py) follows the descriptor limit.
        raise_soft_limit()
        # Subscribe tokens travel in stream URLs: daphne's access log must not keep them.
        accesslog.install()
        user_logged_out.connect(on_user_logged_out, dispatch_uid="events.reauth")
