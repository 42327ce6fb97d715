"""Django's DEBUG error page and error e-mails, without credentials carried in URLs.

Django hides settings whose names look secret (…KEY, …PASSWORD, …TOKEN) but shows
REDIS_URL, the channel layer's hosts and a DATABASE_URL kept elsewhere in full, with
the password inside. This filter also masks the password part of any URL it shows, in
settings and in a traceback's local variables.
"""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@ (the user may be empty, as in redis://:password@host).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)


def mask_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(
        lambda match: f"{match['head']}{SafeExceptionReporterFilter.cleansed_substitute}@", text
    )


class CredentialMaskingFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key: Any, value: Any) -> Any:
        value = super().cleanse_setting(key, value)
        return mask_url_passwords(value) if isinstance(value, str) else value

    def cleanse_special_types(self, request: Any, value: Any) -> Any:
        value = super().cleanse_special_types(request, value)
        return mask_url_passwords(value) if isinstance(value, str) else value
