"""Fixtures of the operations tests (helpers in helpers.py)."""

from __future__ import annotations

import pytest

from support.wait import wait_until

from .helpers import Admin, admin_config


@pytest.fixture(scope="module")
def ops_proxy(module_make_proxy, module_origin):
    """A running 2-worker forward proxy with its admin listener, shared by a module's tests."""
    proxy = module_make_proxy(admin_config(workers=2))
    admin = Admin(proxy)
    wait_until(lambda: admin.healthz()[1] == "ok: 2 of 2 workers ready\n", 10, "both workers ready")
    return proxy, admin, module_origin
