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

    def __init__(self, app: FastAPI, trusted_proxies: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, host: str = "127.0.0.1", port: int | None = None) -> None:
        """``port``: a given one (a server started again where a stopped one was: the same site for the browser)."""
        port = port or free_port()
        self.port = port
        self.url = f"{'https' if tls_cert else 'http'}://{host}:{port}"
        self.server = make_server(app, "127.0.0.1", port, trusted_proxies, tls_cert=tls_cert, tls_key=tls_key)
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


def self_signed_certificate(folder: Path, host: str = "localhost") -> tuple[Path, Path, str]:
    """A throwaway certificate for ``host`` (and 127.0.0.1) and its key, written as PEM into ``folder``; returns the
    two paths and the base64 SHA-256 of the public key (Chromium's --ignore-certificate-errors-spki-list trusts
    exactly that key and no other). Needs the `cryptography` package (the dev extra)."""
    import base64
    import datetime
    import hashlib
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium_available() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def headless_chromium(profile: Path, window: str | None = None, extra_args: tuple[str, ...] = ()):
    """A Selenium driver for Debian's chromium with a fresh profile folder (chromium and chromium-driver needed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", *([f"--window-size={window}"] if window else []),
                *extra_args):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
