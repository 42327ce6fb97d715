"""How large a request body may be, by method and path: the rule routing.py applies
before the application reads any of it. Pure, apart from reading the settings."""

from __future__ import annotations

from django.conf import settings

from events.conf import conf

# The publish body is `{"event": "<type>", "data": <payload>}`: the envelope, and room
# for a payload a client encoded less compactly than the server measures it (\uXXXX
# escapes, indentation). Over twice the payload limit no body can hold a valid event.
ENVELOPE_BYTES = 1024
PAYLOAD_FACTOR = 2


def stream_request(method: str, path: str, prefix: str) -> bool:
    """Whether a request is a stream: GET or HEAD under `prefix`, or on `prefix` without
    its slash (the multi-channel stream). The ASGI wrapper routes by this too
    (events/asgi.py), so a body is refused on every path a stream answers."""
    return method in ("GET", "HEAD") and (path.startswith(prefix) or path == prefix.removesuffix("/"))


def body_limit(method: str, path: str, content_type: str, prefix: str) -> int | None:
    """The most body bytes a request may carry, or None for no limit here.

    - a stream (GET or HEAD under `prefix`): none at all;
    - a publish (POST to `<prefix><channel>/`): what one event can take;
    - anything else: Django's DATA_UPLOAD_MAX_MEMORY_SIZE, which the view would apply
      once it reads the body anyway, except for multipart bodies (file uploads have
      Django's own limits, FILE_UPLOAD_*).
    """
    if stream_request(method, path, prefix):
        return 0
    if method == "POST" and path.startswith(prefix) and path != prefix:
        return PAYLOAD_FACTOR * conf.max_payload_bytes + ENVELOPE_BYTES
    if content_type.startswith("multipart/"):
        return None
    limit = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def declared_length(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length as an int or None, whether a Transfer-Encoding is present)."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


def refusal(
    method: str, path: str, content_type: str, size: int | None, chunked: bool, prefix: str
) -> str | None:
    """Why a body of `size` bytes is refused (413), or None. `size` None: not known
    yet (a chunked body under a server that streams it); only a stream refuses that."""
    limit = body_limit(method, path, content_type, prefix)
    if limit is None:
        return None
    if limit == 0 and (size or (size is None and chunked)):
        return "a stream request has no body"
    if size is None or size <= limit:
        return None
    return f"the body is {size} bytes; at most {limit} are accepted here"
