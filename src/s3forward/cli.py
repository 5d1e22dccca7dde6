"""The ``s3forward`` command line.

Every command answers bad input with a precise message on stderr and a non-zero exit code
(2 for usage and configuration problems, 1 when the work itself failed), never a traceback.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson

from s3forward import __version__
from s3forward.config import (
    DEV_API_KEY,
    DEV_API_SECRET,
    Config,
    ConnectionSettings,
    default_config_path,
    describe_config,
    embedded_default,
    load_config,
)
from s3forward.errors import ConfigError, InputError, Problem, S3ForwardError
from s3forward.logs import configure_logging

EXIT_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _fail_problems(title: str, error: ConfigError | InputError, code: int) -> NoReturn:
    click.echo(
        f"error: {title} ({len(error.problems)} problem{'s' if len(error.problems) != 1 else ''}):",
        err=True,
    )
    for problem in error.problems:
        click.echo(f"  - {problem}", err=True)
    sys.exit(code)


def _config_path(config_path: Path | None) -> Path | None:
    """--config, else $S3FORWARD_CONFIG, else /etc/s3forward/s3forward.toml if it exists."""
    return config_path if config_path is not None else default_config_path()


def _load(config_path: Path | None) -> Config:
    config_path = _config_path(config_path)
    if config_path is None:
        return embedded_default()
    try:
        return load_config(config_path)
    except ConfigError as exc:
        _fail_problems(f"the configuration in {config_path} is not valid", exc, EXIT_USAGE)


def _connection(config: Config, name: str | None) -> ConnectionSettings:
    if name is None:
        if len(config.connections) == 1:
            return next(iter(config.connections.values()))
        known = ", ".join(sorted(config.connections))
        _fail(f"--connection is required: the config has several connections ({known})", EXIT_USAGE)
    if name not in config.connections:
        known = ", ".join(sorted(config.connections))
        _fail(f"--connection {name!r} is not in the config (connections: {known})", EXIT_USAGE)
    return config.connections[name]


@contextmanager
def _progress(label: str, length: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; silent otherwise."""
    if not sys.stderr.isatty() or length <= 0:
        yield lambda _n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help=(
        "TOML configuration file (default: $S3FORWARD_CONFIG, else "
        "/etc/s3forward/s3forward.toml if it exists, else the embedded development one)."
    ),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="s3forward")
def main() -> None:
    """Receive mParticle event batches and land them in Amazon S3."""


# ------------------------------------------------------------------------------------ serve


@main.command()
@config_option
@click.option("--listen", help="HOST:PORT to listen on (overrides [server] listen).")
@click.option(
    "--fd",
    "listen_fd",
    type=click.IntRange(min=0),
    default=None,
    help="Serve on the listening TCP socket inherited as this file descriptor instead of "
    "binding [server] listen (systemd socket activation: --fd 3).",
)
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to let uploads in flight finish on SIGTERM/SIGINT.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="Log line format (default: console when stderr is a terminal, JSON otherwise).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    config_path: Path | None,
    listen: str | None,
    listen_fd: int | None,
    grace: float,
    log_format: str | None,
    log_level: str,
) -> None:
    """Run the Events API server and forward to S3 until SIGTERM/SIGINT.

    SIGHUP (or `s3forward reload`) re-reads the config file without a restart.
    """
    import signal
    from dataclasses import replace

    from s3forward.config import parse_listen
    from s3forward.logs import REPEATS, default_format
    from s3forward.service import Service, open_runtime

    # Until the service installs its reload handler, a SIGHUP must not kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    fmt = log_format or default_format()
    configure_logging(fmt, log_level)  # type: ignore[arg-type]
    config_path = _config_path(config_path)
    config = _load(config_path)
    if listen is not None:
        parsed = parse_listen(listen)
        if parsed is None:
            _fail(f"--listen expects HOST:PORT such as 127.0.0.1:8080, got {listen!r}", EXIT_USAGE)
        config = replace(config, server=replace(config.server, host=parsed[0], port=parsed[1]))
    if listen is not None and listen_fd is not None:
        _fail("give --listen or --fd, not both", EXIT_USAGE)
    listener = None
    if listen_fd is not None:
        from s3forward.api.listen import inherited_listener

        try:
            listener = inherited_listener(listen_fd)
        except ConfigError as exc:
            _fail(str(exc), EXIT_USAGE)
    if config.cluster is not None:  # issue 9: [cluster] runs the cluster roles instead
        _serve_cluster(config, listener)
        return
    try:
        runtime = open_runtime(config)
    except S3ForwardError as exc:
        _fail(str(exc))
    REPEATS.on_suppressed = runtime.metrics.log_messages_suppressed_total.inc

    def announce(url: str) -> None:
        # The banner is for a person at a terminal; JSON log streams stay pure JSON.
        if config_path is None and fmt == "console":
            click.echo(
                f"s3forward {__version__} on its embedded development configuration\n"
                f"  Events API:   {url}/v2/events  and  {url}/v2/bulkevents\n"
                f"  credentials:  api key {DEV_API_KEY!r}, api secret {DEV_API_SECRET!r} "
                "(development only; loopback)\n"
                f"  files land in {runtime.config.connections['local'].local_path}/, "
                f"spool at {runtime.config.spool.path}\n"
                f"  try: curl -u {DEV_API_KEY}:{DEV_API_SECRET} "
                "-H 'Content-Type: application/json' "
                f'-d \'{{"events":[{{"event_type":"custom_event","data":'
                f'{{"event_name":"hello","custom_event_type":"other"}}}}],'
                f'"environment":"development"}}\' {url}/v2/events',
                err=True,
            )

    reload_from = config_path

    def reload_config() -> Config:
        if reload_from is None:
            raise ConfigError([Problem("<embedded default>", "there is no config file to re-read")])
        return load_config(reload_from)

    service = Service(
        runtime,
        grace=grace,
        on_ready=announce,
        load_config=reload_config,
        listener=listener,
        log_format=fmt,
        log_level=log_level,
    )
    try:
        import uvloop

        uvloop.run(service.serve())
    except OSError as exc:
        _fail(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}")
    except S3ForwardError as exc:  # issue 10: HTTP worker processes that could not start
        _fail(str(exc))


def _serve_cluster(config: Config, listener: socket.socket | None) -> None:
    import uvloop

    from s3forward.cluster.runtime import ClusterService

    try:
        uvloop.run(ClusterService(config, listener=listener).serve())
    except OSError as exc:
        _fail(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}")
    except S3ForwardError as exc:
        _fail(str(exc))


# ----------------------------------------------------------------------------------- reload


def _locate_server(config_path: Path | None) -> tuple[str, Path]:
    """The running server's base URL and admin-token file, read leniently from the config.

    Lenient on purpose: the file may hold the new, invalid config that the server is about to
    reject, and that rejection (with every problem) is what the reload command must show.
    """
    import tomllib

    from s3forward.admin import token_path
    from s3forward.config import ServerSettings, SpoolSettings, parse_listen

    path = _config_path(config_path)
    if path is None:
        _fail("no config file: give --config FILE or set S3FORWARD_CONFIG", EXIT_USAGE)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}", EXIT_USAGE)
    server: dict[str, Any] = data["server"] if isinstance(data.get("server"), dict) else {}
    spool: dict[str, Any] = data["spool"] if isinstance(data.get("spool"), dict) else {}
    listen = server.get("listen")
    parsed = parse_listen(listen) if isinstance(listen, str) else None
    host, port = parsed or (ServerSettings.host, ServerSettings.port)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - reaching a wildcard listen locally
        host = "127.0.0.1" if host != "::" else "::1"
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if server.get("tls_cert_file") else "http"
    spool_path = Path(spool["path"]) if isinstance(spool.get("path"), str) else SpoolSettings.path
    return f"{scheme}://{shown}:{port}", token_path(spool_path)


@main.command()
@config_option
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def reload(config_path: Path | None, timeout: float) -> None:
    """Make the running server re-read its config file (like SIGHUP), and report the outcome.

    Exit code 0 when the new config is in effect, 2 when it was rejected (the running config
    stays; the problems are printed), 1 when the server cannot be reached.
    """
    from s3forward.admin import request_reload

    url, token_file = _locate_server(config_path)
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        _fail(
            f"cannot read the admin token {token_file} ({exc.strerror}): is the server running, "
            "and may this user read its spool directory?"
        )
    # The file may just have turned TLS on or off, which the server applies only at restart:
    # if the scheme the file implies gets no HTTP answer, try the other one.
    other = url.replace("https://", "http://") if url.startswith("https") else "https" + url[4:]
    try:
        status, answer = request_reload(url, token, timeout=timeout)
    except OSError as exc:
        try:
            status, answer = request_reload(other, token, timeout=timeout)
        except OSError:
            _fail(f"nothing answers at {url}: {exc}")
    if status == 200 and answer.get("ok"):
        parts = [
            f"{label}: {', '.join(answer[key])}"
            for key, label in (("added", "added"), ("removed", "removed"), ("changed", "changed"))
            if answer.get(key)
        ]
        if answer.get("tls_reloaded"):
            parts.append("TLS certificate reloaded")
        click.echo("reloaded" + (f" ({'; '.join(parts)})" if parts else ""), err=True)
        for item in answer.get("restart_needed") or []:
            click.echo(f"warning: {item} changed; it takes effect at the next restart", err=True)
        return
    problems = answer.get("problems") or [f"HTTP {status}"]
    if status == 422:
        click.echo(
            "error: the new configuration was rejected; the running one stays in effect:",
            err=True,
        )
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(EXIT_USAGE)
    _fail(f"{url} answered HTTP {status}: {'; '.join(str(p) for p in problems)}")


# ------------------------------------------------------------------------- validate-config


@main.command("validate-config")
@click.argument("config_file", type=click.Path(path_type=Path, dir_okay=False))
def validate_config(config_file: Path) -> None:
    """Check CONFIG_FILE and print the resolved configuration (secrets masked)."""
    config = _load(config_file)
    click.echo(orjson.dumps(describe_config(config), option=orjson.OPT_INDENT_2).decode())
    click.echo(
        f"{config_file}: OK ({len(config.inputs)} inputs, {len(config.connections)} connections)",
        err=True,
    )


# ---------------------------------------------------------------------------------- forward


@main.command()
@config_option
@click.option("--connection", "connection_name", help="Connection to forward with.")
@click.option(
    "--input",
    "input_name",
    help="Input whose App Name names the files (default: the connection's first input).",
)
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
def forward(
    config_path: Path | None,
    connection_name: str | None,
    input_name: str | None,
    files: tuple[Path, ...],
) -> None:
    """Forward batches from FILES (JSON, JSON array or NDJSON; gzip ok; - for stdin).

    Every batch is validated first: if any is wrong, nothing is written.
    """
    from s3forward.forward import WrittenFile, forward_batches
    from s3forward.mparticle import Limits, read_batches
    from s3forward.sinks import make_sink

    configure_logging("console", "warning")
    config = _load(config_path)
    settings = _connection(config, connection_name)
    name = input_name or settings.inputs[0]
    if name not in config.inputs:
        _fail(f"--input {name!r} is not in the config", EXIT_USAGE)
    limits = Limits(
        max_batch_bytes=config.server.max_batch_bytes,
        max_json_depth=config.server.max_json_depth,
    )
    batches: list[dict[str, Any]] = []
    problems: list[InputError] = []
    for path in files or (Path("-"),):
        source = "<stdin>" if str(path) == "-" else str(path)
        try:
            data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        except OSError as exc:
            _fail(f"cannot read {source}: {exc.strerror}", EXIT_USAGE)
        try:
            batches.extend(read_batches(data, source=source, limits=limits))
        except InputError as exc:
            problems.append(exc)
    if problems:
        merged = InputError([p for e in problems for p in e.problems])
        _fail_problems("the input is not valid; nothing was written", merged, EXIT_USAGE)
    try:
        sink = make_sink(settings)
    except S3ForwardError as exc:
        _fail(str(exc))
    with _progress("forwarding", len(batches)) as advance:

        def written(f: WrittenFile) -> None:
            advance(f.batches)
            note = "" if f.outcome.value == "created" else " (already present)"
            click.echo(f"{f.key}\t{f.batches} batches\t{f.events} events\t{f.bytes} bytes{note}")

        try:
            summary = forward_batches(
                batches,
                settings,
                sink,
                input_name=name,
                app_name=config.inputs[name].app_name,
                on_file=written,
            )
        except S3ForwardError as exc:
            _fail(f"forwarding stopped: {exc}")
        finally:
            sink.close()
    where = (
        f"s3://{settings.s3_bucket_name}"
        if settings.local_path is None
        else str(settings.local_path)
    )
    click.echo(
        f"wrote {len(summary.files)} files ({summary.batches} batches, {summary.events} events, "
        f"{summary.bytes} bytes) to {where} via connection {settings.name!r}",
        err=True,
    )


# ------------------------------------------------------------------------------------ check


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML configuration file (default: $S3FORWARD_CONFIG or /etc/s3forward/s3forward.toml).",
)
@click.option("--connection", "connection_name", help="Check only this connection.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(config_path: Path | None, connection_name: str | None, as_json: bool) -> None:
    """Verify that each connection can forward: credentials, bucket, region, listing, writing.

    Writes a small verification object (mParticle_Bucket_Verification_...txt holding {}) with
    the connection's exact options. Exit code 0 only when every checked connection would work.
    """
    import logging

    from s3forward.checks import check_connection, render_text

    configure_logging("console", "error")
    if _config_path(config_path) is None:
        _fail("--config FILE is required (or set S3FORWARD_CONFIG)", EXIT_USAGE)
    # botocore logs a failed AssumeRole with a traceback; the report already says it plainly.
    logging.getLogger("botocore.credentials").setLevel(logging.CRITICAL)
    config = _load(config_path)
    names = [_connection(config, connection_name).name] if connection_name else config.connections
    reports = [check_connection(config.connections[name]) for name in names]
    if as_json:
        document = {"ok": all(r.ok for r in reports), "connections": [r.as_dict() for r in reports]}
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_text(reports), nl=False)
    if not all(r.ok for r in reports):
        sys.exit(EXIT_FAILED)


# ----------------------------------------------------------------------------------- policy


@main.command()
@click.option("--bucket", required=True, help="The S3 bucket name.")
@click.option("--role-arn", help="Role s3forward runs as (Option 1: prints a bucket policy).")
@click.option("--user", is_flag=True, help="Option 2: print the IAM policy for an IAM user.")
@click.option("--kms-key-arn", help="Add what SSE-KMS with this key needs.")
def policy(bucket: str, role_arn: str | None, user: bool, kms_key_arn: str | None) -> None:
    """Print the seed's bucket policy (--role-arn) or IAM user policy (--user)."""
    from s3forward.policy import bucket_policy, iam_user_policy

    if bool(role_arn) == user:
        _fail("give exactly one of --role-arn ARN (role-based) or --user (user-based)", EXIT_USAGE)
    if not bucket or "/" in bucket or "*" in bucket:
        _fail(f"--bucket expects a bucket name, got {bucket!r}", EXIT_USAGE)
    if role_arn is not None and not role_arn.startswith("arn:"):
        _fail(
            f"--role-arn expects an ARN such as arn:aws:iam::123456789012:role/name, "
            f"got {role_arn!r}",
            EXIT_USAGE,
        )
    if kms_key_arn is not None and not kms_key_arn.startswith("arn:"):
        _fail(f"--kms-key-arn expects a key ARN, got {kms_key_arn!r}", EXIT_USAGE)
    document = (
        bucket_policy(bucket, role_arn, kms_key_arn=kms_key_arn)
        if role_arn
        else iam_user_policy(bucket, kms_key_arn=kms_key_arn)
    )
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


# ------------------------------------------------------------------------------------ drain


@main.command()
@config_option
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to keep delivering before giving up.",
)
def drain(config_path: Path | None, timeout: float) -> None:
    """Seal every open window and deliver everything in the spool now.

    For a node that will not come back. Run it while `serve` is stopped.
    """
    from s3forward.service import drain as drain_runtime
    from s3forward.service import open_runtime

    configure_logging("console", "warning")
    config = _load(config_path)
    try:
        runtime = open_runtime(config)
    except S3ForwardError as exc:
        _fail(str(exc))
    pending_total = [0]
    with _progress("delivering", 100) as advance:

        def progress(done: int, total: int) -> None:
            pct = int(done * 100 / max(total, 1))
            advance(pct - pending_total[0])
            pending_total[0] = pct

        left = drain_runtime(runtime, timeout=timeout, progress=progress)
    if left:
        _fail(
            f"{left} files are still undelivered after {timeout:g}s; they stay in the spool "
            f"at {config.spool.path} (see `s3forward status`)"
        )
    click.echo("drained: every window sealed and every file delivered", err=True)


# ----------------------------------------------------------------------------- status, spool


def _fetch_status(url: str, auth: tuple[str, str] | None) -> dict[str, Any] | None:
    """``/status.json`` of the server at ``url``; None when nothing answers there."""
    import base64
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        _fail(f"--url expects http://HOST:PORT, got {url!r}", EXIT_USAGE)
    request = urllib.request.Request(url.rstrip("/") + "/status.json")  # noqa: S310 - checked
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    import ssl
    import urllib.parse

    from s3forward.api.status_page import is_loopback

    context = None
    if url.startswith("https://") and is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        # This machine's own server: its certificate is for a public name, not the loopback
        # address dialled. Anywhere else the certificate is verified as usual.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
            data: dict[str, Any] = orjson.loads(response.read())
            return data
    except urllib.error.HTTPError as exc:
        _fail(f"{url} answered HTTP {exc.code} for /status.json")
    except (urllib.error.URLError, OSError):
        return None


@main.command()
@config_option
@click.option("--url", help="Base URL of a running s3forward, e.g. http://127.0.0.1:8080.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def status(config_path: Path | None, url: str | None, as_json: bool) -> None:
    """Show connections, health, freshness and what is waiting.

    Asks the running server (--url, or the config's listen address); when none answers and a
    config is known, reads the spool file directly (read-only).
    """
    from s3forward.status import plain_lines, snapshot_from_spool

    if url is not None and config_path is not None:
        _fail("give --url or --config, not both", EXIT_USAGE)
    config = None if url is not None else _load(config_path)
    auth = None
    if config is not None:
        host = config.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        scheme = "https" if config.server.tls else "http"
        url = f"{scheme}://{host}:{config.server.port}"
        first = next((i for i in config.inputs.values() if i.web is None), None)
        auth = (first.api_key, first.api_secret.reveal()) if first else None
    assert url is not None
    snap = _fetch_status(url, auth)
    if snap is None:
        if config is None:
            _fail(f"nothing answers at {url}; use --config FILE to read the spool instead")
        try:
            snap = snapshot_from_spool(config)
        except S3ForwardError as exc:
            _fail(f"the server at {url} does not answer and {exc}")
    if as_json:
        click.echo(orjson.dumps(snap, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in plain_lines(snap):
            click.echo(line)


@main.group()
def spool() -> None:
    """Inspect or export the undelivered files in the spool (works while the server runs), or
    discard what a removed connection left (with the server stopped)."""


@contextmanager
def _spool_reader(config_path: Path | None) -> Iterator[Any]:
    from s3forward.spool.sqlite import open_spool_readonly

    config = _load(config_path)
    try:
        with open_spool_readonly(config.spool.path) as reader:
            yield reader
    except S3ForwardError as exc:
        _fail(str(exc))


@spool.command("list")
@config_option
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the files as JSON lines.")
def spool_list(config_path: Path | None, limit: int, as_json: bool) -> None:
    """List undelivered files: id, connection, key, bytes, attempts, last error."""
    from s3forward.spool.base import FileState
    from s3forward.status import file_facts

    with _spool_reader(config_path) as reader:
        files = [file_facts(f) for f in reader.files(FileState.PENDING, limit)]
    for f in files:
        if as_json:
            click.echo(orjson.dumps(f).decode())
        else:
            error = f["last_error"] or "-"
            click.echo(
                f"{f['id']}\t{f['connection']}\t{f['key']}\t{f['stored_bytes']}\t"
                f"{f['attempts']}\t{error}"
            )
    if not as_json:
        click.echo(f"{len(files)} undelivered files", err=True)


@spool.command("show")
@config_option
@click.argument("file_id", type=int)
@click.option("--lines", type=int, default=5, show_default=True, help="Lines of content to show.")
def spool_show(config_path: Path | None, file_id: int, lines: int) -> None:
    """Show one file's metadata and its first lines (decompressed)."""
    from s3forward.status import file_facts, preview

    with _spool_reader(config_path) as reader:
        stored = reader.file(file_id)
        body = reader.file_body(file_id)
    if stored is None:
        _fail(f"no file {file_id} in the spool (see `s3forward spool list`)")
    meta = file_facts(stored)
    for name, value in meta.items():
        click.echo(f"{name}: {value}")
    if body is None:
        click.echo("(delivered: its content is no longer in the spool)")
        return
    click.echo("---")
    for line in preview(body, meta["content_encoding"], lines):
        click.echo(line)


@spool.command("export")
@config_option
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--connection", "connection_name", help="Export only this connection's files.")
def spool_export(config_path: Path | None, directory: Path, connection_name: str | None) -> None:
    """Write undelivered files under DIRECTORY as the objects they would be (key = path).

    With several connections, each gets its own sub-directory named after it. The spool is
    not changed: the files stay pending until delivered or the spool is removed.
    """
    from s3forward.spool.base import FileState
    from s3forward.status import export_path, write_exported

    config = _load(config_path)
    if connection_name is not None:
        _connection(config, connection_name)
    with _spool_reader(config_path) as reader:
        metas = reader.files(FileState.PENDING, limit=2**62)
        if connection_name is not None:
            metas = [m for m in metas if m.connection == connection_name]
        several = len({m.connection for m in metas}) > 1
        written = 0
        with _progress("exporting", len(metas)) as advance:
            for meta in metas:
                body = reader.file_body(meta.file_id)
                if body is None:  # delivered meanwhile
                    advance(1)
                    continue
                try:
                    path = export_path(directory, meta.key, meta.connection if several else None)
                    write_exported(path, body)
                except (ValueError, OSError) as exc:
                    _fail(f"cannot export file {meta.file_id}: {exc}")
                written += 1
                advance(1)
    click.echo(f"exported {written} undelivered files to {directory}", err=True)


@spool.command("discard")
@config_option
@click.option(
    "--connection",
    "connection_name",
    required=True,
    help="A connection no longer in the config whose data to let go.",
)
@click.option("--yes", is_flag=True, help="Discard it; without --yes only show what it would.")
def spool_discard(config_path: Path | None, connection_name: str, yes: bool) -> None:
    """Discard the windows and undelivered files of a connection removed from the config.

    They stay in the spool (and count against spool.max_bytes) until a connection of that name
    is configured again, or until this discards them. Run it with the server stopped; export
    the files first (`spool export`) to keep a copy.
    """
    from s3forward.spool.discard import connections_held, discard, held_by
    from s3forward.spool.sqlite import SqliteSpool

    config = _load(config_path)
    if connection_name in config.connections:
        _fail(
            f"connection {connection_name!r} is configured: its data is being forwarded; remove "
            "it from the config (and restart or reload) before discarding what it left",
            EXIT_USAGE,
        )
    path = config.spool.path
    if not path.exists():
        _fail(f"there is no spool at {path}")
    try:
        store = SqliteSpool.open(path)
    except S3ForwardError as exc:
        _fail(f"{exc} (stop the server before discarding)")
    try:
        held = discard(store, connection_name) if yes else held_by(store, connection_name)
        others = sorted(connections_held(store) - set(config.connections)) if held.empty else []
    except S3ForwardError as exc:
        _fail(str(exc))
    finally:
        store.close()
    if held.empty:
        hint = f"; it holds data of: {', '.join(others)}" if others else ""
        click.echo(f"the spool holds nothing for connection {connection_name!r}{hint}")
    elif yes:
        click.echo(f"discarded {held.describe()}")
    else:
        click.echo(f"would discard {held.describe()}; nothing changed (add --yes to do it)")


# ---------------------------------------------------------------- cluster (issue 9)


@main.group("cluster")
def cluster_group() -> None:
    """Cluster mode on NATS JetStream: create and check streams and buckets, drain a worker."""


def _cluster_config(config_path: Path) -> Config:
    config = _load(config_path)
    if config.cluster is None:
        _fail(f"{config_path} has no [cluster] section", EXIT_USAGE)
    return config


@cluster_group.command("init")
@click.option(
    "--config", "config_path", required=True, type=click.Path(path_type=Path, dir_okay=False)
)
def cluster_init(config_path: Path) -> None:
    """Create (or update) the streams and KV buckets of [cluster]; safe to run again."""
    import asyncio

    from s3forward.cluster.admin import init_cluster

    config = _cluster_config(config_path)
    try:
        lines = asyncio.run(init_cluster(config))
    except S3ForwardError as exc:
        _fail(str(exc))
    for line in lines:
        click.echo(line)


@cluster_group.command("check")
@click.option(
    "--config", "config_path", required=True, type=click.Path(path_type=Path, dir_okay=False)
)
def cluster_check(config_path: Path) -> None:
    """Verify servers, streams (replicas, discard new), buckets and sync_interval."""
    import asyncio

    from s3forward.cluster.admin import check_cluster

    config = _cluster_config(config_path)
    try:
        results = asyncio.run(check_cluster(config))
    except S3ForwardError as exc:
        _fail(str(exc))
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        fix = f" -- fix: {result.fix}" if result.fix and not result.ok else ""
        click.echo(f"{mark} {result.name}: {result.message}{fix}")
    if not all(r.ok for r in results):
        sys.exit(EXIT_FAILED)


@cluster_group.command("drain")
@click.option(
    "--config", "config_path", required=True, type=click.Path(path_type=Path, dir_okay=False)
)
@click.option("--url", help="Base URL of the worker to retire (default: the config's address).")
@click.option("--wait", "wait_s", default=120.0, show_default=True, help="Seconds to wait.")
def cluster_drain(config_path: Path, url: str | None, wait_s: float) -> None:
    """Retire a worker: it hands every partition over, then may be stopped.

    Asks the worker to drain (POST /cluster/drain), then waits until it owns no partition.
    Its open windows are rebuilt from the log by the workers that take its partitions.
    """
    import base64
    import time
    import urllib.error
    import urllib.request

    config = _cluster_config(config_path)
    if url is None:
        host = config.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        url = f"http://{host}:{config.server.port}"
    if not url.startswith(("http://", "https://")):
        _fail(f"--url expects http://HOST:PORT, got {url!r}", EXIT_USAGE)
    first = next((i for i in config.inputs.values() if i.web is None), None)
    if first is None:
        _fail("the config has no Events API input whose credentials could authorise the drain")
    token = base64.b64encode(f"{first.api_key}:{first.api_secret.reveal()}".encode()).decode()
    base = url.rstrip("/")
    request = urllib.request.Request(base + "/cluster/drain", data=b"", method="POST")  # noqa: S310 - checked
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http(s) URL
            worker = orjson.loads(response.read()).get("worker")
    except urllib.error.HTTPError as exc:
        _fail(
            f"{url} refused the drain: HTTP {exc.code} {exc.read()[:200].decode(errors='replace')}"
        )
    except (urllib.error.URLError, OSError) as exc:
        _fail(f"nothing answers at {url}: {exc}")
    click.echo(f"worker {worker} is draining")
    deadline = time.monotonic() + wait_s
    owned: list[int] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/cluster/status.json", timeout=10) as response:  # noqa: S310 - http(s) URL
                owned = orjson.loads(response.read())["worker"]["owned"]
        except (urllib.error.URLError, OSError, KeyError):
            owned = [-1]
        if not owned:
            click.echo(f"worker {worker} owns no partition: safe to stop it")
            return
        time.sleep(0.5)
    _fail(f"worker {worker} still owns partitions {owned} after {wait_s:g}s")


def run() -> None:  # pragma: no cover - console entry point alias
    main()
