"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright for Python.

Contract: `/` loads with no request leaving the admin origin (it works offline), shows one table
row per worker, its request count rises after traffic without a reload of the page (it polls
/stats every second), the charts get data, and no script error happens. A screenshot is kept in
test-output/<test id>/dashboard.png for a human to look at.
"""

from __future__ import annotations

import pytest

from e2e.test_chromium import ARGS, CHROMIUM, browser  # noqa: F401 - `browser` is a fixture (Playwright)

from .helpers import Admin, admin_config, traffic

SENT = 40
# Playwright evaluates a plain expression string with eval(), which the page's CSP forbids: pass functions.


@pytest.fixture
def chromium(browser):  # noqa: F811
    chromium = browser.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=60_000)
    yield chromium
    chromium.close()


def test_the_dashboard_shows_the_workers_and_live_counts(make_proxy, origin, chromium, output_dir):
    proxy = make_proxy(admin_config(workers=2))
    admin = Admin(proxy)
    page = chromium.new_page(viewport={"width": 1440, "height": 900})
    requested, errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))

    page.goto(admin.url + "/", wait_until="load", timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#workers tbody tr').length === 2", timeout=10_000)
    pids = sorted(int(pid) for pid in page.eval_on_selector_all("#workers tbody tr", "rows => rows.map(r => r.dataset.pid)"))
    assert pids == proxy.worker_pids()
    before = _count(page.text_content("#total-requests"))

    traffic(proxy, origin, SENT)
    page.wait_for_function("least => Number(document.getElementById('total-requests').textContent.replace(/,/g, '')) >= least",
                           arg=before + SENT, timeout=10_000)
    cells = page.eval_on_selector_all("#workers tbody tr", "rows => rows.map(r => r.children[8].textContent)")
    assert sum(_count(cell) for cell in cells) >= SENT
    page.wait_for_function("() => document.getElementById('health').textContent === 'healthy'", timeout=5_000)
    page.wait_for_timeout(1500)            # one more poll, so the charts show the traffic
    page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)

    assert errors == []
    assert requested and all(url.startswith(admin.url + "/") for url in requested), requested
    assert (output_dir / "dashboard.png").stat().st_size > 10_000


def _count(text: str) -> int:
    return int(text.replace(",", "").strip())
