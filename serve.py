"""The dashboard behind its own security headers: ``streamlit run serve.py`` (what ``make run`` does).

Streamlit's own server cannot add response headers (streamlit/streamlit#9160). Since
1.67, ``streamlit run`` serves a script that defines an ``st.App`` on Starlette under
uvicorn, and an ``st.App`` takes ASGI middleware: this file is that script, and
``streamlit_app.py`` stays the app (``streamlit run streamlit_app.py`` still works,
without the headers). The headers:

- ``X-Frame-Options: SAMEORIGIN`` and ``Content-Security-Policy: frame-ancestors 'self'``:
  no other site can frame the app (clickjacking); Streamlit's own component frames can.
- ``X-Content-Type-Options: nosniff``: a served file is never run as another type.
- ``Referrer-Policy: same-origin``: the app's URLs do not leak to other sites.

A fuller Content-Security-Policy (script and style sources) would break Streamlit's
front end, which uses inline styles; docs/reliability.md says what a proxy can add.
"""

import streamlit as st
from starlette.middleware import Middleware

SECURITY_HEADERS = [
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"content-security-policy", b"frame-ancestors 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers to every HTTP response, leaves websockets alone."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in present)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


app = st.App("streamlit_app.py", middleware=[Middleware(SecurityHeaders)])
