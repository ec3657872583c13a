"""`mpoxscan serve` and `mpoxscan expert`: the screening app and its expert accounts (imports stay lazy, so that
`mpoxscan predict` never loads the web stack)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click

from mpoxscan.errors import MpoxscanError

_data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where cases (photos and, by default, the SQLite database) are kept [default: ~/.local/share/mpoxscan].")
_db_option = click.option(
    "--db", metavar="URL", envvar="MPOXSCAN_DB",
    help="A database URL, e.g. postgresql://user:password@host/mpoxscan [default: SQLite in --data-dir; env MPOXSCAN_DB].")


_photo_store_option = click.option(
    "--photo-store", type=click.Choice(["folder", "db"]), default="folder", show_default=True,
    envvar="MPOXSCAN_PHOTO_STORE",
    help="Where photos and heat maps are kept: 'folder' (--data-dir/photos, one machine) or 'db' (rows of the "
         "database: every worker and host shares them; use with PostgreSQL) [env MPOXSCAN_PHOTO_STORE].")


def _photo_store(kind: str, folder: Path, engine):
    from mpoxscan.web.store import DatabasePhotoStore, PhotoStore

    return DatabasePhotoStore(engine) if kind == "db" else PhotoStore(folder / "photos")


@contextmanager
def _database_errors(url_hint: str):
    """A database that cannot be reached or opened is one line on stderr, not a driver traceback."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0][:200]
        raise MpoxscanError(f"cannot open the database {url_hint}: {reason}") from None
    except ArgumentError as exc:
        raise MpoxscanError(f"not a database URL: {url_hint} ({exc})") from None


def _data_folder(path: Path | None) -> Path:
    """The data folder, created (owner-only) if missing, or a one-line error."""
    from mpoxscan.web.db import default_data_dir

    folder = path or default_data_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (folder / "photos").mkdir(exist_ok=True)
    except OSError as exc:
        raise MpoxscanError(f"cannot use {folder} as the data folder: {exc.strerror or exc}") from None
    return folder


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


@click.command("serve", epilog="""\b
Example:
  mpoxscan serve                       # then open http://127.0.0.1:8000 on a phone-sized browser
  mpoxscan serve --host 0.0.0.0 --port 8080 --data-dir /srv/mpoxscan
  mpoxscan serve --db postgresql://mpoxscan:secret@localhost/mpoxscan --model export/model.int8.onnx
  mpoxscan serve --proxy 127.0.0.1 --secure-cookies      # behind nginx / caddy serving https
  mpoxscan serve --tls-cert cert.pem --tls-key key.pem --host 0.0.0.0 --port 8443   # https itself
  mpoxscan serve --workers 4 --db postgresql://mpoxscan@db/mpoxscan --photo-store db --limits-storage redis://cache:6379
""")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--model", "model_file", type=click.Path(path_type=Path), help="An exported .onnx file (default: the bundled model).")
@_data_dir_option
@_db_option
@click.option("--upload-limit", default="20/hour", show_default=True, help="Cases one address may send (`limits` notation).")
@click.option("--screen-limit", default="120/hour", show_default=True,
              help="Server-side screenings one address may ask for (`limits` notation; the page screens on the phone).")
@click.option("--login-limit", default="10/15minutes", show_default=True, help="Failed expert sign-ins per address (counted in the database: a restart does not reset them).")
@click.option("--secure-cookies/--no-secure-cookies", default=None,
              help="Mark the expert's cookie Secure and send HSTS (when served over https) [default: on with --tls-cert].")
@click.option("--proxy", "trusted_proxies", metavar="ADDRESSES",
              help="Behind a reverse proxy: its address(es), comma-separated, whose X-Forwarded-For is believed "
                   "(so that rate limits count each client, not the proxy).")
@click.option("--notify-url", metavar="URL", envvar="MPOXSCAN_NOTIFY_URL",
              help="A webhook told of each new case (JSON with the case number, the screening answer and the dashboard "
                   "link; never the photo). Slack / Mattermost incoming webhooks show its `text`. [env MPOXSCAN_NOTIFY_URL]")
@click.option("--keep-days", default=90, show_default=True, type=click.IntRange(1),
              help="Delete answered cases (photos too) this many days after the answer: done at start; for a server "
                   "that runs for weeks, also run `mpoxscan cases purge --answered-days N` daily. The phone page "
                   "shows this figure before the person consents.")
@click.option("--public-url", metavar="URL", envvar="MPOXSCAN_PUBLIC_URL",
              help="The address people and experts reach the service at, e.g. https://mpoxscan.example.org: used in "
                   "the webhook's dashboard links (never the request's Host header) [env MPOXSCAN_PUBLIC_URL].")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Server processes (uvicorn's workers) sharing the port. Above 1 the rate limits need a shared "
                   "--limits-storage; several hosts also need --db postgresql://... and --photo-store db.")
@_photo_store_option
@click.option("--limits-storage", default="memory://", show_default=True, metavar="URI",
              envvar="MPOXSCAN_LIMITS_STORAGE",
              help="Where the upload and screening limits count (a `limits` storage URI): memory:// is this process's "
                   "own; redis://host:6379 is one count for every worker and host that survives a restart "
                   "[env MPOXSCAN_LIMITS_STORAGE].")
@click.option("--assets-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MPOXSCAN_ASSETS_DIR",
              help="Where the page's files are kept versioned and precompressed (Brotli, gzip), made once at the "
                   "first start: a folder a reverse proxy can read to serve them itself (deploy/nginx-mpoxscan.conf) "
                   "[default: ~/.cache/mpoxscan/assets; env MPOXSCAN_ASSETS_DIR].")
@click.option("--tls-cert", type=click.Path(path_type=Path),
              help="Serve https with this certificate (PEM, chain first).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="The private key (PEM) of --tls-cert.")
def serve_cmd(host: str, port: int, model_file: Path | None, data_dir: Path | None, db: str | None, upload_limit: str,
              screen_limit: str, login_limit: str, secure_cookies: bool | None, trusted_proxies: str | None,
              notify_url: str | None,
              public_url: str | None, keep_days: int, workers: int, photo_store: str, limits_storage: str,
              assets_dir: Path | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """The screening app: a phone page that screens photos on the device (ONNX Runtime Web) with the bundled
    model, shows where the model looked and, with consent, sends the case to an expert; the expert dashboard
    at /expert. The database is migrated on start."""
    from datetime import timedelta

    from mpoxscan.deploy.runtime import bundled_model
    from mpoxscan.web.app import create_app, make_server
    from mpoxscan.web.cases import experts, purge_answered
    from mpoxscan.web.db import database_url, make_engine, migrate, session_factory
    from mpoxscan.web.settings import ORT_DIST, Settings

    _check_limits(upload_limit, screen_limit, login_limit)
    if notify_url and not notify_url.startswith(("http://", "https://")):
        raise MpoxscanError(f"--notify-url must be an http:// or https:// URL, not {notify_url.split(':')[0]}:...")
    if public_url and not public_url.startswith(("http://", "https://")):
        raise MpoxscanError(f"--public-url must be an http:// or https:// URL, not {public_url.split(':')[0]}:...")
    _check_tls(tls_cert, tls_key)
    _check_limits_storage(limits_storage, workers)
    settings = Settings(model=model_file or bundled_model(), data_dir=_data_folder(data_dir), db=db,
                        upload_limit=upload_limit, screen_limit=screen_limit, login_limit=login_limit,
                        secure_cookies=bool(tls_cert) if secure_cookies is None else secure_cookies,
                        notify_url=notify_url, public_url=public_url, keep_days=keep_days, photo_store=photo_store,
                        limits_storage=limits_storage, assets_dir=assets_dir)
    url = database_url(db, settings.data_dir)
    try:
        app = create_app(settings)  # builds the compressed files once, before any worker starts
    except OSError as exc:
        where = assets_dir or "the assets folder"
        raise MpoxscanError(f"cannot write the page's compressed files into {where}: {exc.strerror or exc}") from None
    # The database is opened and migrated here, before listening, so that one that cannot be used is one line here
    # rather than a traceback from uvicorn's start-up; the app's lifespan then opens it for the requests (its
    # migration finds nothing left to do).
    with _database_errors(_safe_url(url)):
        engine = make_engine(url)
        try:
            schema = migrate(engine)
            with session_factory(engine)() as session:
                # The retention the page promises (/api/privacy) holds from the start, not only once cron runs.
                store = _photo_store(photo_store, settings.data_dir, engine)
                gone = purge_answered(session, store, timedelta(days=keep_days))
                no_expert = not experts(session)
        finally:
            engine.dispose()
    if not ORT_DIST.is_dir():
        click.echo("note: onnxruntime-web is not installed (make setup runs npm ci): the page will screen on the server",
                   err=True)
    address = f"{'https' if tls_cert else 'http'}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    photos_at = "the database" if photo_store == "db" else settings.data_dir / "photos"
    click.echo(f"mpoxscan: the page's files, versioned and compressed, in {app.state.assets.folder}")
    click.echo(f"mpoxscan: cases in {settings.data_dir} (database {_safe_url(url)}, schema {schema}; photos in "
               f"{photos_at}; rate limits in {limits_storage.split('://')[0]}; {workers} worker(s))")
    click.echo(f"mpoxscan: open {address} in a browser (a phone-sized window, or a phone on the same network with "
               f"--host 0.0.0.0); experts sign in at {address}/expert")
    if gone:
        click.echo(f"mpoxscan: {len(gone)} case(s) answered over {keep_days} days ago deleted (--keep-days)")
    if no_expert:
        where = " ".join(f"--{k} {v}" for k, v in (("data-dir", data_dir), ("db", db)) if v)
        click.echo(f"mpoxscan: no expert account yet: create one with `mpoxscan expert add EMAIL{' ' + where if where else ''}`")
    tls = dict(tls_cert=str(tls_cert) if tls_cert else None, tls_key=str(tls_key) if tls_key else None)
    from mpoxscan.web.connections import raise_open_files_limit

    raise_open_files_limit()  # before the workers start: they inherit it (and cap their connections under it)
    if workers == 1:
        make_server(app, host, port, trusted_proxies, **tls).run()
        return
    # Several processes: uvicorn binds the port once and starts (and restarts) the workers; each builds its own app
    # from the same settings through the factory, since an app object cannot be handed to another process.
    import os

    import uvicorn

    from mpoxscan.web.app import uvicorn_options
    from mpoxscan.web.settings import SETTINGS_ENV

    del app  # this process only supervises
    settings.screen_threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ[SETTINGS_ENV] = settings.to_json()
    uvicorn.run("mpoxscan.web.app:create_app_from_env", factory=True, workers=workers,
                **uvicorn_options(host, port, trusted_proxies, **tls))


def _check_tls(cert: Path | None, key: Path | None) -> None:
    """A certificate and key that uvicorn can serve, or one line saying what is wrong (before anything starts)."""
    import ssl

    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise MpoxscanError("--tls-cert and --tls-key go together: give both (or neither, behind a proxy)")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise MpoxscanError(f"{option} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise MpoxscanError(f"--tls-key {key} is not the private key of --tls-cert {cert}") from None
        raise MpoxscanError(f"cannot use --tls-cert {cert} with --tls-key {key}: not a PEM certificate and key "
                            f"({exc.reason or exc})") from None
    except OSError as exc:
        raise MpoxscanError(f"cannot read --tls-cert {cert} / --tls-key {key}: {exc.strerror or exc}") from None


def _check_limits_storage(uri: str, workers: int) -> None:
    """A `limits` storage that exists and answers, and one that every worker shares when there are several."""
    from limits.errors import ConfigurationError
    from limits.storage import storage_from_string

    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if workers > 1 and scheme == "memory":
        raise MpoxscanError(f"--workers {workers} needs a shared --limits-storage (e.g. redis://localhost:6379): with "
                            f"memory:// each worker would count its own uploads, a limit {workers} times too loose")
    try:
        storage = storage_from_string(uri)
    except ConfigurationError as exc:
        raise MpoxscanError(f"--limits-storage {scheme or uri!r}: {exc}") from None
    except Exception as exc:  # a malformed URI: the client library's own error, in one line
        raise MpoxscanError(f"--limits-storage: not a storage URI ({type(exc).__name__})") from None
    try:
        ok = storage.check()
    except Exception:
        ok = False
    if not ok:
        raise MpoxscanError(f"cannot reach the rate-limit storage {scheme}://... (--limits-storage): is the server running?")


def _check_limits(*values: str) -> None:
    from limits import parse

    for value in values:
        try:
            parse(value)
        except ValueError:
            raise MpoxscanError(f"not a rate limit: {value!r} (e.g. 20/hour, 10/15minutes)") from None


@contextmanager
def _session(data_dir: Path | None, db: str | None, migrate_schema: bool = True):
    from mpoxscan.web.db import database_url, make_engine, migrate, session_factory

    url = database_url(db, _data_folder(data_dir))
    with _database_errors(_safe_url(url)):
        engine = make_engine(url)
        if migrate_schema:
            migrate(engine)
        with session_factory(engine)() as session:
            yield session
    engine.dispose()


@click.group("expert", epilog="""\b
Example:
  mpoxscan expert add doctor@example.org          # asks for the password twice
  printf '%s\\n' "$PASSWORD" | mpoxscan expert add doctor@example.org --password-stdin
  mpoxscan expert list
  mpoxscan expert disable doctor@example.org
""")
def expert_group() -> None:
    """Expert accounts for the dashboard (same --data-dir / --db as `serve`)."""


@expert_group.command("add")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin (for scripts).")
@_data_dir_option
@_db_option
def expert_add(email: str, password_stdin: bool, data_dir: Path | None, db: str | None) -> None:
    """Create an expert account (the password is stored as an argon2 hash only)."""
    from mpoxscan.web.cases import add_expert
    from mpoxscan.web.security import MIN_PASSWORD_LENGTH

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"Password for {email} (at least {MIN_PASSWORD_LENGTH} characters)", hide_input=True,
                                confirmation_prompt=True)
    with _session(data_dir, db) as session:
        try:
            expert = add_expert(session, email, password)
        except ValueError as exc:
            raise MpoxscanError(str(exc)) from None
    click.echo(f"expert account {expert.email} created")


@expert_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
@_data_dir_option
@_db_option
def expert_list(as_json: bool, data_dir: Path | None, db: str | None) -> None:
    """The expert accounts."""
    import json

    from mpoxscan.web.cases import experts

    with _session(data_dir, db) as session:
        rows = experts(session)
        if as_json:
            click.echo(json.dumps([{"email": e.email, "active": e.active,
                                    "created_at": e.created_at.isoformat(timespec="seconds")} for e in rows]))
            return
        for e in rows:
            click.echo(f"{e.email}\t{'active' if e.active else 'disabled'}\tsince {e.created_at:%Y-%m-%d}")
    if not rows:
        click.echo("no expert account yet: mpoxscan expert add EMAIL", err=True)


def _set_active(email: str, active: bool, data_dir: Path | None, db: str | None) -> None:
    from mpoxscan.web.cases import set_active

    with _session(data_dir, db) as session:
        try:
            set_active(session, email, active)
        except ValueError as exc:
            raise MpoxscanError(str(exc)) from None
    click.echo(f"{email}: {'enabled' if active else 'disabled (and signed out)'}")


@expert_group.command("disable")
@click.argument("email")
@_data_dir_option
@_db_option
def expert_disable(email: str, data_dir: Path | None, db: str | None) -> None:
    """Stop an account from signing in (its answers and audit rows stay)."""
    _set_active(email, False, data_dir, db)


@expert_group.command("enable")
@click.argument("email")
@_data_dir_option
@_db_option
def expert_enable(email: str, data_dir: Path | None, db: str | None) -> None:
    """Let a disabled account sign in again."""
    _set_active(email, True, data_dir, db)


@click.group("cases", epilog="""\b
Example:
  mpoxscan cases purge --answered-days 90      # delete cases answered more than 90 days ago, with their photos
  mpoxscan cases purge                         # only remove files no case owns (left by a crash or a full disk)
  mpoxscan cases export --out expert-cases     # consented, expert-labelled cases as a source folder for curate
""")
def cases_group() -> None:
    """Stored cases (same --data-dir / --db as `serve`)."""


@cases_group.command("purge")
@click.option("--answered-days", type=click.IntRange(0),
              help="Delete cases answered more than this many days ago (their photos too; the audit log keeps numbers).")
@_data_dir_option
@_db_option
@_photo_store_option
def cases_purge(answered_days: int | None, data_dir: Path | None, db: str | None, photo_store: str) -> None:
    """Delete answered cases older than a number of days (keep people's photos no longer than needed), and sweep the
    photo folder: `.part` files and photos no case owns. Beside a running server only files older than an hour are
    swept (the server may be between writing a photo and storing its case); with no server running, all of them."""
    from datetime import timedelta

    from mpoxscan.web.cases import StorageUnavailable, purge_answered, sweep_photos

    folder = _data_folder(data_dir)
    with _session(folder, db) as session:
        store = _photo_store(photo_store, folder, session.get_bind())
        try:
            if answered_days is not None:
                gone = purge_answered(session, store, timedelta(days=answered_days))
                click.echo(f"{len(gone)} answered case(s) older than {answered_days} days deleted")
            report = sweep_photos(session, store)
        except StorageUnavailable as exc:
            raise MpoxscanError(str(exc)) from None
    spared = (f"; {report.kept_young} younger than an hour kept (a server is running)" if report.kept_young else "")
    click.echo(f"{len(report.removed)} file(s) no case owns removed from the photo folder{spared}")


@cases_group.command("export")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The export folder: new, empty, or written by an earlier export (then brought up to date).")
@_data_dir_option
@_db_option
@_photo_store_option
def cases_export(out: Path, data_dir: Path | None, db: str | None, photo_store: str) -> None:
    """Write the answered cases whose person gave the training consent, labelled by the expert with a class (not
    "unsure", nor concluded "retake-photo"), as a source folder for `mpoxscan curate`: OUT/<label>/case-<id>_<n>.jpg
    (the photos as stored) and OUT/_meta/cases.jsonl (provenance; nothing personal). A rerun adds the new cases and
    drops the withdrawn ones; a crash leaves the previous export whole. The database must be at this version's schema
    (it is not migrated here)."""
    from mpoxscan.web.db import default_data_dir
    from mpoxscan.web.training_export import curate_command, export_cases

    folder = data_dir or default_data_dir()
    if not db and not (folder / "mpoxscan.sqlite3").is_file():
        raise MpoxscanError(f"no database in {folder}: give the --data-dir (or --db) the server uses")
    with _session(folder, db, migrate_schema=False) as session:
        report = export_cases(session, _photo_store(photo_store, folder, session.get_bind()), out)
    classes = ", ".join(f"{label} {n}" for label, n in report.by_class.items()) or "no case yet"
    if report.recovered:
        click.echo(f"finished the export that stopped in {out} before updating it")
    click.echo(f"exported {report.cases} case(s), {report.photos} photo(s) to {out} ({report.added} added, "
               f"{report.removed} removed, {report.kept_after_deletion} kept after their deletion): {classes}")
    if report.missing:
        click.echo(f"warning: {report.missing} case(s) left out: a photo missing from the photo store (or a label "
                   f"no folder can be named)", err=True)
    click.echo(f"curate it with: {curate_command(out)}")
