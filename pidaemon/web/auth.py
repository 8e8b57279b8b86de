"""Who may see the camera: basic authentication (what a phone's browser prompts for) or the same
secret as a bearer token (for scripts), compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac

from pidaemon.web.http import Request, Response

REALM = 'Basic realm="pi-infer", charset="UTF-8"'


class Credential:
    def __init__(self, username: str, secret: str) -> None:
        self._basic = f"{username}:{secret}".encode()
        self._token = secret.encode()

    def allows(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.encode(), self._token)
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._basic)


def unauthorized() -> Response:
    """401 with the challenge that makes a browser ask for the user name and password."""
    return Response(401, b"unauthorized: this page needs the user name and password\n",
                    headers={"WWW-Authenticate": REALM, "Cache-Control": "no-store"})
