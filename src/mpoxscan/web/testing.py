"""Helpers for the tests and benchmarks that drive the app for real: the app served in a thread by the same uvicorn
server `mpoxscan serve` runs, and Debian's headless Chromium set up the one way that works on these machines."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections import Counter
from pathlib import Path

from fastapi import FastAPI

from mpoxscan.web.app import make_server

#: Flags that keep Chromium quiet, offline and self-contained (see ../shared/TOOLCHAIN.md).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_requests(app: FastAPI) -> Counter[str]:
    """A counter of the requests ``app`` receives, by path, e.g. ``counts["/api/screen"]`` (to check that the page
    screened on the device). Call it before the app serves its first request. The service itself counts nothing."""
    counts: Counter[str] = Counter()

    class CountRequests:
        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] == "http":
                counts[scope["path"]] += 1
            await self.inner(scope, receive, send)

    app.add_middleware(CountRequests)
    return counts


class ServerThread:
    """``with ServerThread(app) as server: ... server.url ...``, or ``server = ServerThread(app).start()`` and
    ``server.stop()`` (e.g. to go offline in the middle of a test; stopping twice is harmless)."""

    def __init__(self, app: FastAPI, trusted_proxies: str | None = None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = make_server(app, "127.0.0.1", port, trusted_proxies)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        return self.start()

    def start(self) -> ServerThread:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            raise RuntimeError("the server did not stop within 10 s")

    def __exit__(self, *_exc) -> None:
        self.stop()


def chromium_available() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def headless_chromium(profile: Path, window: str | None = None):
    """A Selenium driver for Debian's chromium with a fresh profile folder (chromium and chromium-driver needed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", *([f"--window-size={window}"] if window else [])):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
