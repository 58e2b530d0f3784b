"""What the metrics endpoint answers: ``/metrics``, ``/`` (a page linking it), and nothing else.

``/metrics`` is prometheus_client's exposition, chosen as its own server chooses it: the
format the ``Accept`` header asks for (OpenMetrics or text), gzip when ``Accept-Encoding``
allows it, ``name[]`` to restrict the families. Any other path is a 404 and any method
other than GET and HEAD a 405, so a typo in a scrape config fails loudly instead of
scraping a page that is not the metrics.
"""

from __future__ import annotations

import gzip
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from hotplugd.observe.httpserver import Reply, Responder

METRICS_PATH = "/metrics"
METHODS = (b"GET", b"HEAD")
INDEX = (
    b"<!doctype html>\n<html><head><title>hotplugd</title></head>\n"
    b"<body><h1>hotplugd</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n"
)


def responder(registry: CollectorRegistry) -> Responder:
    """The endpoint's answers, with ``registry`` at ``/metrics``."""

    def respond(request: h11.Request) -> Reply:
        target = urlsplit(request.target.decode("latin-1"))
        if target.path not in ("/", METRICS_PATH):
            return _text(HTTPStatus.NOT_FOUND, f"nothing at {target.path}: the metrics are at {METRICS_PATH}")
        if request.method not in METHODS:
            reply = _text(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method.decode('latin-1')} is not allowed here")
            return Reply(reply.status, [*reply.headers, ("Allow", "GET, HEAD")], reply.body)
        if target.path == "/":
            return Reply(HTTPStatus.OK, [("Content-Type", "text/html; charset=utf-8")], INDEX)
        return exposition(registry, request.headers, target.query)

    return respond


def exposition(registry: CollectorRegistry, headers: h11.Headers | list[tuple[bytes, bytes]], query: str) -> Reply:
    """The metrics in the format ``headers`` ask for; ``query`` may restrict them (``name[]=...``)."""
    fields = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    encoder, content_type = choose_encoder(fields.get("accept", ""))
    names = parse_qs(query).get("name[]")
    body = encoder(registry.restricted_registry(names) if names else registry)
    out = [("Content-Type", content_type)]
    if gzip_accepted(fields.get("accept-encoding", "")):
        body = gzip.compress(body)
        out.append(("Content-Encoding", "gzip"))
    return Reply(HTTPStatus.OK, out, body)


def _text(status: HTTPStatus, message: str) -> Reply:
    return Reply(status, [("Content-Type", "text/plain; charset=utf-8")], f"{message}\n".encode())
