"""The service's settings and the paths of its own files: one module that the app, the dependencies and the routers
all import (so that no router imports the app)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mpoxscan.web.db import default_data_dir

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
#: onnxruntime-web, installed from npm by `make setup`; without it the page screens on the server.
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"


@dataclass
class Settings:
    model: Path
    data_dir: Path = field(default_factory=default_data_dir)
    db: str | None = None  # a SQLAlchemy / PostgreSQL URL; SQLite in data_dir when None
    max_upload_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 50_000_000
    # Rate limits per client address (`limits` notation): cases sent, server-side screenings, login attempts.
    upload_limit: str = "20/hour"
    screen_limit: str = "120/hour"
    login_limit: str = "10/15minutes"
    secure_cookies: bool = False  # set when the app is served over https (behind a proxy)
    notify_url: str | None = None  # a webhook told of every new case (mpoxscan.web.notify)
    # Answered cases are deleted this many days after the answer (`serve` purges at start; `cases purge` from cron);
    # the phone page tells the person this figure before they consent (/api/privacy).
    keep_days: int = 90
    public_url: str | None = None  # e.g. https://mpoxscan.example.org: the address in links sent elsewhere
    # Where photos are kept: "folder" (DATA_DIR/photos, one machine) or "db" (rows of the database: several hosts).
    photo_store: str = "folder"
    # The `limits` storage of the upload and screening limits: memory:// is this process's own (one worker);
    # redis://host:port is one count for every worker and host, kept across restarts.
    limits_storage: str = "memory://"
    # ONNX Runtime threads per process (None: every core). `serve --workers N` gives each worker cores / N, so that
    # N workers screening at once do not oversubscribe the cores (N processes each running a thread per core).
    screen_threads: int | None = None
    # Where the page's files are kept versioned and precompressed (assets.py): None is assets.default_assets_dir(),
    # shared by every data folder; `serve --assets-dir` names one that a reverse proxy can read too.
    assets_dir: Path | None = None

    def to_json(self) -> str:
        """The settings as JSON, for the worker processes (`serve --workers N`: see app.create_app_from_env)."""
        import json
        from dataclasses import asdict

        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        import json

        values = json.loads(text)
        for name in ("model", "data_dir"):
            values[name] = Path(values[name])
        return cls(**values)


#: The environment variable through which `serve --workers N` hands its settings to each worker's app factory.
SETTINGS_ENV = "MPOXSCAN_SERVE_SETTINGS"
