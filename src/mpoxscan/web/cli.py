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
""")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--model", "model_file", type=click.Path(path_type=Path), help="An exported .onnx file (default: the bundled model).")
@_data_dir_option
@_db_option
@click.option("--upload-limit", default="20/hour", show_default=True, help="Cases one address may send (`limits` notation).")
@click.option("--login-limit", default="10/15minutes", show_default=True, help="Failed expert sign-ins per address (counted in the database: a restart does not reset them).")
@click.option("--secure-cookies", is_flag=True, help="Mark the expert's cookie Secure (when served over https).")
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
def serve_cmd(host: str, port: int, model_file: Path | None, data_dir: Path | None, db: str | None, upload_limit: str,
              login_limit: str, secure_cookies: bool, trusted_proxies: str | None, notify_url: str | None,
              public_url: str | None, keep_days: int) -> None:
    """The screening app: a phone page that screens photos on the device (ONNX Runtime Web) with the bundled
    model, shows where the model looked and, with consent, sends the case to an expert; the expert dashboard
    at /expert. The database is migrated on start."""
    from datetime import timedelta

    from mpoxscan.deploy.runtime import bundled_model
    from mpoxscan.web.app import create_app, make_server
    from mpoxscan.web.cases import experts, purge_answered
    from mpoxscan.web.db import database_url, make_engine, migrate, session_factory
    from mpoxscan.web.settings import ORT_DIST, Settings

    _check_limits(upload_limit, login_limit)
    if notify_url and not notify_url.startswith(("http://", "https://")):
        raise MpoxscanError(f"--notify-url must be an http:// or https:// URL, not {notify_url.split(':')[0]}:...")
    if public_url and not public_url.startswith(("http://", "https://")):
        raise MpoxscanError(f"--public-url must be an http:// or https:// URL, not {public_url.split(':')[0]}:...")
    settings = Settings(model=model_file or bundled_model(), data_dir=_data_folder(data_dir), db=db,
                        upload_limit=upload_limit, login_limit=login_limit, secure_cookies=secure_cookies,
                        notify_url=notify_url, public_url=public_url, keep_days=keep_days)
    url = database_url(db, settings.data_dir)
    app = create_app(settings)
    # The database is opened and migrated here, before listening, so that one that cannot be used is one line here
    # rather than a traceback from uvicorn's start-up; the app's lifespan then opens it for the requests (its
    # migration finds nothing left to do).
    with _database_errors(_safe_url(url)):
        engine = make_engine(url)
        try:
            schema = migrate(engine)
            with session_factory(engine)() as session:
                # The retention the page promises (/api/privacy) holds from the start, not only once cron runs.
                gone = purge_answered(session, app.state.photos, timedelta(days=keep_days))
                no_expert = not experts(session)
        finally:
            engine.dispose()
    if not ORT_DIST.is_dir():
        click.echo("note: onnxruntime-web is not installed (make setup runs npm ci): the page will screen on the server",
                   err=True)
    address = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    click.echo(f"mpoxscan: cases in {settings.data_dir} (database {_safe_url(url)}, schema {schema})")
    click.echo(f"mpoxscan: open {address} in a browser (a phone-sized window, or a phone on the same network with "
               f"--host 0.0.0.0); experts sign in at {address}/expert")
    if gone:
        click.echo(f"mpoxscan: {len(gone)} case(s) answered over {keep_days} days ago deleted (--keep-days)")
    if no_expert:
        where = " ".join(f"--{k} {v}" for k, v in (("data-dir", data_dir), ("db", db)) if v)
        click.echo(f"mpoxscan: no expert account yet: create one with `mpoxscan expert add EMAIL{' ' + where if where else ''}`")
    make_server(app, host, port, trusted_proxies).run()


def _check_limits(*values: str) -> None:
    from limits import parse

    for value in values:
        try:
            parse(value)
        except ValueError:
            raise MpoxscanError(f"not a rate limit: {value!r} (e.g. 20/hour, 10/15minutes)") from None


@contextmanager
def _session(data_dir: Path | None, db: str | None):
    from mpoxscan.web.db import database_url, make_engine, migrate, session_factory

    url = database_url(db, _data_folder(data_dir))
    with _database_errors(_safe_url(url)):
        engine = make_engine(url)
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
""")
def cases_group() -> None:
    """Stored cases (same --data-dir / --db as `serve`)."""


@cases_group.command("purge")
@click.option("--answered-days", type=click.IntRange(0),
              help="Delete cases answered more than this many days ago (their photos too; the audit log keeps numbers).")
@_data_dir_option
@_db_option
def cases_purge(answered_days: int | None, data_dir: Path | None, db: str | None) -> None:
    """Delete answered cases older than a number of days (keep people's photos no longer than needed), and sweep the
    photo folder: `.part` files and photos no case owns. Beside a running server only files older than an hour are
    swept (the server may be between writing a photo and storing its case); with no server running, all of them."""
    from datetime import timedelta

    from mpoxscan.web.cases import PhotoStore, StorageUnavailable, purge_answered, sweep_photos

    folder = _data_folder(data_dir)
    store = PhotoStore(folder / "photos")
    with _session(folder, db) as session:
        try:
            if answered_days is not None:
                gone = purge_answered(session, store, timedelta(days=answered_days))
                click.echo(f"{len(gone)} answered case(s) older than {answered_days} days deleted")
            report = sweep_photos(session, store)
        except StorageUnavailable as exc:
            raise MpoxscanError(str(exc)) from None
    spared = (f"; {report.kept_young} younger than an hour kept (a server is running)" if report.kept_young else "")
    click.echo(f"{len(report.removed)} file(s) no case owns removed from the photo folder{spared}")
