"""POST and OPTIONS on /events/...: Django's request handling in one thread hop.

The publish endpoint is a plain sync view. Django's ASGI handler serves it through a
middleware chain that is part async and part sync (WhiteNoise is sync only), so a request
crosses between the event loop and threads a dozen times and starts a thread of its own
(asgiref's ThreadSensitiveContext): under daphne, that machinery took most of a POST's
CPU time (ARCHITECTURE.md, "Performance notes").

This handler serves those requests the way a WSGI server would: the body is read on the
event loop, then the request_started signal, Django's full middleware chain loaded in
sync mode, the view, and the response's close (request_finished) run in one call on a
publishing thread of the process; only the bytes go back through the loop. Everything
Django does for the request (ALLOWED_HOSTS, security headers, sessions and CSRF for staff,
the upload size limit, error pages) is unchanged.

One difference: with CONN_MAX_AGE = 0, Django would open and close a database connection
for every request. Django advises 0 under ASGI because its sync views run each request
on a thread of its own, where a kept connection would never be used again; these threads
live as long as the process, as a WSGI server's do, so each keeps its connection until
one of its requests finds it idle for over KEEP_CONNECTION_SECONDS. A kept connection is
checked before its first query of each request (Django's CONN_HEALTH_CHECKS, turned on
for it), so one that a database restart broke is replaced rather than failing a POST; a
SQLite connection whose file is no longer at its path is closed. A CONN_MAX_AGE above 0,
or None, is used as it is, and so is Django's connection pool (a pooled connection goes
back to the pool after each request).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import connections
from django.http import HttpResponseBadRequest, HttpResponseBase
from django.urls import set_script_prefix

from events.executors import ProcessExecutor

# Requests of one process served at once: Django's own ASGI default is one thread for all
# sync code; two let one request's database wait overlap another's Python work.
THREADS = 2
# How long a publishing thread keeps its database connection after a request when the
# project's CONN_MAX_AGE is 0 (the module docstring says why).
KEEP_CONNECTION_SECONDS = 60.0


# The file a kept SQLite connection has open, as (device, inode), on the connection.
_FILE_ATTR = "_events_kept_file"


def _keep_connections() -> None:
    """Let this thread's open connections outlive the request where CONN_MAX_AGE is 0
    (Django closes a connection once its close_at has passed)."""
    until = time.monotonic() + KEEP_CONNECTION_SECONDS
    for connection in connections.all(initialized_only=True):
        settings = connection.settings_dict
        if (
            connection.connection is not None
            and settings.get("CONN_MAX_AGE") == 0
            and not (settings.get("OPTIONS") or {}).get("pool")
        ):
            connection.close_at = until
            vars(connection)["health_check_enabled"] = True  # Django's, set at connect
            if connection.vendor == "sqlite" and not hasattr(connection, _FILE_ATTR):
                setattr(connection, _FILE_ATTR, _file_id(connection.settings_dict["NAME"]))


def _drop_moved_files() -> None:
    """Close a kept SQLite connection whose database file is no longer at its path (a
    volume unmounted, the file moved or deleted): the open file would take writes that
    the database at the path never gets. A new connection then fails, and the request
    with it, as it would have without the kept connection."""
    for connection in connections.all(initialized_only=True):
        kept = getattr(connection, _FILE_ATTR, None)
        if kept is None:
            continue
        if connection.connection is None or _file_id(connection.settings_dict["NAME"]) != kept:
            delattr(connection, _FILE_ATTR)
            connection.close()


def _file_id(path: object) -> tuple[int, int] | None:
    try:
        stat = os.stat(str(path))
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class PublishHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        # The same middleware as the site, as the sync chain a WSGI server would run.
        self.load_middleware(is_async=False)
        self.threads = ProcessExecutor(THREADS, "events-post")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self.threads.get(), self._respond, scope, body_file)
        try:
            await self.send_response(response, send)
        finally:
            # Not awaited: nothing of it goes to the client, and it saves waking the loop.
            self.threads.get().submit(self._close, response, body_file)

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        set_script_prefix(get_script_prefix(scope))
        _drop_moved_files()
        # In this thread, so that close_old_connections looks after this thread's connection.
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None or error_response is not None:
            # create_request gives a request or the response that refuses it.
            return error_response or HttpResponseBadRequest()
        response = self.get_response(request)
        vars(response)["_handler_class"] = self.__class__  # the sender of request_finished
        _keep_connections()
        return response

    def _close(self, response: HttpResponseBase, body_file: Any) -> None:
        # Possibly not the thread that served the request: its own connection is kept too.
        _keep_connections()
        try:
            response.close()  # sends request_finished: a failed or obsolete connection is closed
        finally:
            body_file.close()
