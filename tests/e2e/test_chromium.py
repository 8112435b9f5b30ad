"""A real browser through the proxy: headless Chromium (Playwright) loads a small site in forward mode.

The site (HTML + CSS + JS + PNG) is served by the scriptable origin on 127.0.0.1; Chromium bypasses
proxies for loopback unless told `<-loopback>`. The page must render: text set by the script,
a colour from the stylesheet, the image decoded; and the origin must have seen every request
with our Via. A screenshot is kept in test-output/<test id>/.
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from support.wait import require

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

INDEX = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>through the proxy</title>
<link rel="stylesheet" href="/site/style.css">
<script src="/site/app.js" defer></script></head>
<body><h1 id="title">prefork_proxy e2e</h1><p id="message">waiting for the script</p>
<img id="picture" src="/site/picture.png" alt="a generated picture"></body></html>
"""
STYLE = b"#title { color: rgb(200, 30, 60); font-family: sans-serif; }\n"
SCRIPT = b"document.getElementById('message').textContent = 'set by app.js';\n"


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG with a gradient, built with zlib only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"".join(bytes((x * 8 % 256, y * 8 % 256, 128)) for x in range(width))
                    for y in range(height))  # filter byte 0, then RGB pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
def site(origin):
    origin.add_file("/site/index.html", INDEX, "text/html; charset=utf-8")
    origin.add_file("/site/style.css", STYLE, "text/css")
    origin.add_file("/site/app.js", SCRIPT, "text/javascript")
    origin.add_file("/site/picture.png", png(32, 24), "image/png")
    return origin


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "playwright is not installed (.venv/bin/pip install playwright)")
    require(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is not installed (tools/sysdeps.sh installs chromium)")
    with sync_playwright() as playwright:
        yield playwright


def test_chromium_loads_a_site_through_the_proxy(make_proxy, site, browser, output_dir):
    proxy = make_proxy({"server": {"workers": 2}})
    chromium = browser.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=60_000,
                                       proxy={"server": proxy.url, "bypass": "<-loopback>"})
    try:
        page = chromium.new_page()
        response = page.goto(site.url("/site/index.html"), wait_until="load", timeout=30_000)
        assert response is not None and response.status == 200
        assert "prefork_proxy" in (response.headers.get("via") or "")
        page.wait_for_function("document.getElementById('message').textContent === 'set by app.js'",
                               timeout=10_000)
        colour = page.eval_on_selector("#title", "e => getComputedStyle(e).color")
        size = page.eval_on_selector("#picture", "e => [e.complete, e.naturalWidth, e.naturalHeight]")
        page.screenshot(path=str(output_dir / "page.png"), full_page=True)
    finally:
        chromium.close()
    assert colour == "rgb(200, 30, 60)"
    assert size == [True, 32, 24]
    for path in ("/site/index.html", "/site/style.css", "/site/app.js", "/site/picture.png"):
        seen = site.requests(path)
        assert seen, f"the origin never saw {path}"
        assert all("1.1 prefork_proxy" in (r.header("Via") or "") for r in seen), f"{path} came without our Via"
        assert all(r.target == path for r in seen), "the origin got a target that is not origin-form"
    assert (output_dir / "page.png").stat().st_size > 1000
