"""Helpers shared by the browser tests: Debian chromium through playwright, loopback servers, request checks."""
from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def free_port() -> int:
    "A free TCP port on 127.0.0.1."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def chromium():
    "A headless Debian chromium (never a downloaded browser); skips when it or playwright is missing."
    if not Path(CHROMIUM).exists(): pytest.skip("no /usr/bin/chromium: run `make browser`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: `make .venv/.installed`")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try: yield browser
        finally: browser.close()


class RequestLog:
    "Every request a page makes, the ones that failed (network error or HTTP >= 400) and those to other hosts."
    def __init__(self, page):
        self.urls, self.failed, self.outside = [], [], []
        page.on("request", self._request)
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} (HTTP {r.status})"))

    def _request(self, r):
        self.urls.append(r.url)
        u = urlparse(r.url)
        if u.scheme in ("http", "https", "ws", "wss") and u.hostname not in LOOPBACK: self.outside.append(r.url)
        elif u.scheme not in ("http", "https", "ws", "wss", "data", "blob", "about"): self.outside.append(r.url)


def screenshot(target, name: str) -> Path:
    "Save a screenshot of a page or element as screenshots/`name`.png (git-ignored) and return its path."
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path
