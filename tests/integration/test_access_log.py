"""The access log: one line per request, combined format (+ cache status, duration, upstream status)
or JSON lines. The log may be buffered, so each test reads it after a graceful stop (which flushes).
"""

from __future__ import annotations

import json
import re

from support.rawhttp import build, exchange
from support.wait import free_port

COMBINED = re.compile(
    r'^(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"(?P<extra>.*)$')


def lines_with(proxy, marker: str) -> list[str]:
    return [line for line in proxy.access_lines() if marker in line]


def test_combined_format(make_proxy, origin):
    proxy = make_proxy({"log": {"access_format": "combined"}})
    for number in range(3):
        response, _ = exchange(proxy.port, build("GET", origin.url(f"/bytes?n=1234&marker=combined{number}"), [
            ("User-Agent", "log-tester/1.0"), ("Referer", "http://referer.example/page")]))
        assert response.status == 200
    assert proxy.stop() == 0
    lines = lines_with(proxy, "marker=combined")
    assert len(lines) == 3, lines
    for number, line in enumerate(lines):
        match = COMBINED.match(line)
        assert match, f"not combined format: {line!r}"
        fields = match.groupdict()
        assert fields["host"] == "127.0.0.1" and fields["user"] == "-"
        assert fields["request"] == f"GET {origin.url(f'/bytes?n=1234&marker=combined{number}')} HTTP/1.1"
        assert (fields["status"], fields["size"]) == ("200", "1234")
        assert (fields["referer"], fields["agent"]) == ("http://referer.example/page", "log-tester/1.0")
        assert re.search(r"\d", fields["extra"]), f"no duration/upstream status after the combined fields: {line!r}"
        assert re.search(r"\b200\b", fields["extra"]), f"no upstream status: {line!r}"


def test_errors_are_logged_with_their_status(make_proxy, origin):
    proxy = make_proxy()
    refused = f"http://127.0.0.1:{free_port()}/marker-refused"
    assert exchange(proxy.port, build("GET", refused))[0].status == 502
    assert exchange(proxy.port, build("GET", origin.url("/nothing-here?marker-404")))[0].status == 404
    assert exchange(proxy.port, build("GET", "/marker-origin-form"))[0].status == 400
    assert proxy.stop() == 0
    for marker, status in [("marker-refused", "502"), ("marker-404", "404"), ("marker-origin-form", "400")]:
        lines = lines_with(proxy, marker)
        assert len(lines) == 1, (marker, proxy.access_lines())
        assert COMBINED.match(lines[0]).group("status") == status, lines[0]


def test_json_format(make_proxy, origin):
    proxy = make_proxy({"log": {"access_format": "json"}})
    for number in range(2):
        response, _ = exchange(proxy.port, build("POST", origin.url(f"/echo?marker=json{number}"), body=b"abc"))
        assert response.status == 200
    assert proxy.stop() == 0
    records = [json.loads(line) for line in proxy.access_lines()]  # every line is one JSON object
    ours = [record for record in records if "marker=json" in json.dumps(record)]
    assert len(ours) == 2
    for record in ours:
        assert isinstance(record, dict)
        values = list(record.values())
        assert "POST" in json.dumps(values)
        assert 200 in values or "200" in values, record
