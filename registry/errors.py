"""OCI error codes: each failure a handler raises maps to one HTTP status and a spec-shaped JSON body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

# code -> (default HTTP status, message), from the OCI distribution spec's error table.
CODES: Final[Mapping[str, tuple[int, str]]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # Not in the spec's table (which covers 4xx only): the pull-through cache's upstream failed.
    "UNAVAILABLE": (503, "upstream registry unavailable"),
}


class RegistryHTTPError(Exception):
    """Raised by handlers; the app's middleware turns it into an OCI error response."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        default_status, default_message = CODES[code]
        super().__init__(message or default_message)
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        """The error as a response (aiohttp leaves the body out of answers to HEAD)."""
        body = json.dumps({"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]})
        return web.Response(
            status=self.status, body=body.encode(), content_type="application/json", headers=self.headers
        )
