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
the upload size limit, error pages, connection handling per request) is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponseBadRequest, HttpResponseBase
from django.urls import set_script_prefix

from events.executors import ProcessExecutor

# Requests of one process served at once: Django's own ASGI default is one thread for all
# sync code; two let one request's database wait overlap another's Python work.
THREADS = 2


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
        # In this thread, so that close_old_connections looks after this thread's connection.
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None or error_response is not None:
            # create_request gives a request or the response that refuses it.
            return error_response or HttpResponseBadRequest()
        response = self.get_response(request)
        vars(response)["_handler_class"] = self.__class__  # the sender of request_finished
        return response

    def _close(self, response: HttpResponseBase, body_file: Any) -> None:
        try:
            response.close()  # sends request_finished: this thread's connection is closed as usual
        finally:
            body_file.close()
