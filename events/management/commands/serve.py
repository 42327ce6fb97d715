from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events import embedded_redis
from events.conf import conf
from events.shell import python_command


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value!r} (from --port or $PORT)")
    return port


def _check_free(host: str, port: int) -> None:
    """A one-line reason, before anything starts, when the address cannot be listened on."""
    if os.name != "posix":
        return  # SO_REUSEADDR means something else on Windows: let daphne find out
    address = host.strip("[]")  # daphne takes [::1] as well as ::1
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As Twisted sets it for daphne: a port with connections in TIME_WAIT is
            # free to listen on, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
    except socket.gaierror as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror} (check HOST)") from exc
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is a server already running? "
            f"Choose another port with PORT=..."
        ) from exc


def asgi_target() -> str:
    """The project's ASGI application as daphne takes it: `package.module:name`."""
    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted:
        raise CommandError(
            'ASGI_APPLICATION is not set: add ASGI_APPLICATION = "<project>.asgi.application" to your '
            "settings (its asgi.py wrapped with events.asgi.with_streams)"
        )
    module, _, name = str(dotted).rpartition(".")
    return f"{module}:{name}"


def _layer_url() -> str:
    hosts = ((settings.CHANNEL_LAYERS.get("default") or {}).get("CONFIG") or {}).get("hosts") or ["?"]
    return str(hosts[0])


class Command(BaseCommand):
    help = (
        "Serve the project's ASGI application with daphne, first starting a development Redis "
        "on EVENTS_EMBEDDED_REDIS when that is set."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        # A string default goes through `type` too: a bad $PORT is a one-line error.
        parser.add_argument("--port", type=port_number, default=os.environ.get("PORT", "8000"))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        target = asgi_target()
        _check_free(host, port)
        redis_process = None
        socket_path = conf.embedded_redis
        if socket_path is not None:
            try:
                redis_process = embedded_redis.start(socket_path)
            except RuntimeError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"Redis: embedded, on unix://{socket_path} (EVENTS_EMBEDDED_REDIS)")
        else:
            self.stdout.write(f"Redis: {_layer_url()}")
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        python = python_command()
        self.stdout.write(
            f"Feed page:  {base}/feed/?channel=orders&channel=public\n"
            f"Admin:      {base}/admin/   (create a user: {python} manage.py createsuperuser)\n"
            f'Publish:    {python} manage.py send_event public \'{{"hello": "world"}}\'\n'
        )
        # Before daphne writes to the same output (a log file buffers, a terminal does not).
        self.stdout.flush()
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", host, "-p", str(port), target])

        def stop(signum: int, frame: Any) -> None:
            daphne.send_signal(signal.SIGTERM)

        # Ctrl-C reaches the whole process group; SIGTERM only us: pass it on either way.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            daphne.wait()
        finally:
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait()
