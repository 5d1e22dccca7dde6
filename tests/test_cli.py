"""The command line: validate-config, forward and policy (CliRunner, plus the real script)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner, Result

from s3forward.cli import main
from s3forward.config import UNSELECTED_MESSAGE

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SDK_EXAMPLE = Path(__file__).parent / "fixtures" / "sdk-example-batch.json"
SECRET_ENV = "TEST_SECRET"
SECRET = "cli-secret-value-7f3a"
API_SECRET = "api-secret-value-91c2"
SCRIPT = Path(sys.executable).parent / "s3forward"


def write_config(
    path: Path,
    *,
    bucket: str = "mp-forwarding-cli",
    endpoint: str = "http://127.0.0.1:9",
    app_name: str = "DemoApp",
    extra: str = "",
    connection_extra: str = 'store_data_in_folders_by_date = "none"\n',
) -> Path:
    """A one-input, one-connection config whose secret comes from ${TEST_SECRET}."""
    path.write_text(
        "[inputs.web]\n"
        'api_key = "web-key"\n'
        f'api_secret = "{API_SECRET}"\n'
        f"app_name = {json.dumps(app_name)}\n"
        "[connections.x]\n"
        'inputs = ["web"]\n'
        f's3_bucket_name = "{bucket}"\n'
        f'endpoint_url = "{endpoint}"\n'
        "force_path_style = true\n"
        'access_key_id = "testing"\n'
        f'secret_access_key = "${{{SECRET_ENV}}}"\n' + connection_extra + extra,
        encoding="utf-8",
    )
    return path


def invoke(*args: str, secret: str = "testing", stdin: bytes | None = None) -> Result:
    """Run the CLI in process with ${TEST_SECRET} set."""
    return CliRunner().invoke(main, list(args), env={SECRET_ENV: secret}, input=stdin)


def keys(s3: S3Client, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# --------------------------------------------------------------------------- validate-config


def test_validate_config_prints_the_resolved_config_with_secrets_masked(tmp_path: Path) -> None:
    """A valid config exits 0, prints JSON with defaults filled in and no secret anywhere."""
    config = write_config(tmp_path / "c.toml")
    result = invoke("validate-config", str(config), secret=SECRET)
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    connection = described["connections"]["x"]
    assert connection["secret_access_key"] == "****"
    assert connection["send_lifecycle_events"] is True
    assert connection["store_data_in_folders_by_date"] == "none"
    assert described["inputs"]["web"]["api_secret"] == "****"
    assert f"{config}: OK (1 inputs, 1 connections)" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert API_SECRET not in result.stdout + result.stderr


def test_validate_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    """Three mistakes give exit 2 and three listed problems; no secret value is printed."""
    config = write_config(
        tmp_path / "c.toml",
        connection_extra="use_compression = 1\nsend_screen_view = false\n",
    )
    result = invoke("validate-config", str(config), secret=SECRET)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"the configuration in {config} is not valid (3 problems):" in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3
    assert any("connections.x.use_compression: expected true or false" in p for p in problems)
    assert any("(did you mean 'send_screen_views'?)" in p for p in problems)
    assert any(UNSELECTED_MESSAGE in p for p in problems)
    assert SECRET not in result.output
    assert API_SECRET not in result.output


def test_validate_config_names_a_missing_environment_variable(tmp_path: Path) -> None:
    """An unset ${TEST_SECRET} is named in the error, with exit code 2."""
    config = write_config(tmp_path / "c.toml")
    result = CliRunner().invoke(main, ["validate-config", str(config)], env={SECRET_ENV: None})
    assert result.exit_code == 2
    assert f"connections.x.secret_access_key: environment variable {SECRET_ENV} is not set" in (
        result.stderr
    )


def test_validate_config_reports_invalid_toml_with_its_line(tmp_path: Path) -> None:
    """A TOML syntax error exits 2 and names the line."""
    config = tmp_path / "c.toml"
    config.write_text("[inputs.web]\napi_key = 'k'\n[connections\n", encoding="utf-8")
    result = invoke("validate-config", str(config))
    assert result.exit_code == 2
    assert "is not valid TOML" in result.stderr
    assert "line 3" in result.stderr
    assert "Traceback" not in result.output


def test_validate_config_reports_a_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist exits 2 with a message, not a traceback."""
    result = invoke("validate-config", str(tmp_path / "absent.toml"))
    assert result.exit_code == 2
    assert "cannot read the file" in result.stderr


# ---------------------------------------------------------------------------- forward: good


def test_forward_prints_each_key_and_a_summary(
    tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client
) -> None:
    """forward writes the example batch, prints its key on stdout and a summary on stderr."""
    config = write_config(tmp_path / "c.toml", bucket=bucket, endpoint=moto_server)
    result = invoke("forward", "--config", str(config), str(SDK_EXAMPLE))
    assert result.exit_code == 0, result.output
    (key,) = keys(s3_client, bucket)
    assert result.stdout.startswith(f"{key}\t1 batches\t5 events\t")
    assert "wrote 1 files (1 batches, 5 events, " in result.stderr
    assert f"to s3://{bucket} via connection 'x'" in result.stderr


def test_forward_reads_ndjson_gzip_and_stdin(
    tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client
) -> None:
    """NDJSON files, gzipped files and stdin ("-") are all read, one batch per line or file."""
    config = write_config(tmp_path / "c.toml", bucket=bucket, endpoint=moto_server)
    batch = SDK_EXAMPLE.read_bytes()
    one_line = orjson.dumps(orjson.loads(batch))
    ndjson = tmp_path / "b.ndjson"
    ndjson.write_bytes(one_line + b"\n" + one_line + b"\n")
    gzipped = tmp_path / "b.json.gz"
    gzipped.write_bytes(gzip.compress(batch))
    result = invoke("forward", "--config", str(config), str(ndjson), str(gzipped), "-", stdin=batch)
    assert result.exit_code == 0, result.output
    (key,) = keys(s3_client, bucket)  # one device: one file
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body.count(b"\n") == 4


def test_forward_with_a_2kb_app_name_truncates_the_file_name(
    tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client
) -> None:
    """A 2 KB App Name is cut to 100 characters; the key keeps the seed's shape."""
    config = write_config(
        tmp_path / "c.toml", bucket=bucket, endpoint=moto_server, app_name="A" * 2048
    )
    result = invoke("forward", "--config", str(config), str(SDK_EXAMPLE))
    assert result.exit_code == 0, result.output
    (key,) = keys(s3_client, bucket)
    assert re.fullmatch(r"A{100}_\d{20}_\d{5}\.txt", key), key


def test_forward_without_config_uses_the_embedded_local_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no --config, forward writes under ./s3forward-data/bucket in an upload-date folder."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["forward", str(SDK_EXAMPLE)])
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "s3forward-data" / "bucket").rglob("*.txt"))
    assert len(files) == 1
    assert re.fullmatch(r"s3forward-dev_\d{20}_\d{5}\.txt", files[0].name)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", files[0].parent.name)


# ----------------------------------------------------------------------------- forward: bad


def _bad_input(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """An input file with one kind of defect, and the text its error must contain."""
    path = tmp_path / f"{kind}.json"
    if kind == "malformed-json":
        path.write_bytes(b'{"events": [}')
        return path, f"{path}:1: is not valid JSON: unexpected character"
    if kind == "unknown-event-type":
        batch: dict[str, Any] = orjson.loads(SDK_EXAMPLE.read_bytes())
        batch["events"][2]["event_type"] = "page_view"
        path.write_bytes(orjson.dumps(batch))
        return path, f'{path}:batch.events[2].event_type: "page_view" is not a known event_type'
    if kind == "broken-gzip":
        path.write_bytes(gzip.compress(SDK_EXAMPLE.read_bytes())[:40])
        return path, f"{path}: is not valid gzip"
    if kind == "missing-file":
        return tmp_path / "absent.json", f"cannot read {tmp_path / 'absent.json'}"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["malformed-json", "unknown-event-type", "broken-gzip", "missing-file"]
)
def test_forward_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client, kind: str
) -> None:
    """Bad input exits 2 with a precise error and nothing lands, even with good files before it."""
    config = write_config(tmp_path / "c.toml", bucket=bucket, endpoint=moto_server)
    bad, expected = _bad_input(tmp_path, kind)
    result = invoke("forward", "--config", str(config), str(SDK_EXAMPLE), str(bad))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert keys(s3_client, bucket) == []


def test_forward_lists_the_problems_of_every_bad_file(
    tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client
) -> None:
    """Two bad files give both problems in one report."""
    config = write_config(tmp_path / "c.toml", bucket=bucket, endpoint=moto_server)
    first, first_error = _bad_input(tmp_path, "malformed-json")
    second, second_error = _bad_input(tmp_path, "unknown-event-type")
    result = invoke("forward", "--config", str(config), str(first), str(second))
    assert result.exit_code == 2
    assert "the input is not valid; nothing was written (2 problems):" in result.stderr
    assert first_error in result.stderr
    assert second_error in result.stderr
    assert keys(s3_client, bucket) == []


def test_forward_with_an_invalid_config_exits_2(tmp_path: Path) -> None:
    """forward refuses an UNSELECTED connection before reading any input."""
    config = write_config(tmp_path / "c.toml", connection_extra="")
    result = invoke("forward", "--config", str(config), str(SDK_EXAMPLE))
    assert result.exit_code == 2
    assert UNSELECTED_MESSAGE in result.stderr


def test_forward_needs_connection_when_there_are_several(tmp_path: Path) -> None:
    """With two connections, --connection is required, and an unknown one is refused."""
    second = (
        "[connections.y]\n"
        'inputs = ["web"]\n'
        's3_bucket_name = "mp-forwarding-y"\n'
        'store_data_in_folders_by_date = "none"\n'
    )
    config = write_config(tmp_path / "c.toml", extra=second)
    result = invoke("forward", "--config", str(config), str(SDK_EXAMPLE))
    assert result.exit_code == 2
    assert "--connection is required: the config has several connections (x, y)" in result.stderr
    result = invoke("forward", "--config", str(config), "--connection", "z", str(SDK_EXAMPLE))
    assert result.exit_code == 2
    assert "--connection 'z' is not in the config (connections: x, y)" in result.stderr


def test_forward_refuses_an_unknown_input(tmp_path: Path) -> None:
    """--input must name an input of the config."""
    config = write_config(tmp_path / "c.toml")
    result = invoke("forward", "--config", str(config), "--input", "mobile", str(SDK_EXAMPLE))
    assert result.exit_code == 2
    assert "--input 'mobile' is not in the config" in result.stderr


def test_forward_to_a_missing_bucket_fails_with_exit_1(
    tmp_path: Path, moto_server: str, bucket: str
) -> None:
    """A bucket that does not exist stops forwarding with exit 1 and names the bucket."""
    missing = bucket + "-missing"
    config = write_config(tmp_path / "c.toml", bucket=missing, endpoint=moto_server)
    result = invoke("forward", "--config", str(config), str(SDK_EXAMPLE))
    assert result.exit_code == 1
    assert f"forwarding stopped: cannot write to bucket {missing}" in result.stderr
    assert "NoSuchBucket" in result.stderr


# ------------------------------------------------------------------------------------ policy


def test_policy_role_prints_the_bucket_policy() -> None:
    """--role-arn prints the seed's bucket policy for the bucket."""
    role = "arn:aws:iam::111122223333:role/s3forward"
    result = invoke("policy", "--bucket", "mp-forwarding-shop", "--role-arn", role)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (statement,) = document["Statement"]
    assert statement["Principal"] == {"AWS": role}
    assert statement["Resource"] == "arn:aws:s3:::mp-forwarding-shop/*"
    assert statement["Action"] == ["s3:PutObject", "s3:PutObjectAcl"]


def test_policy_user_prints_the_iam_policy_with_kms() -> None:
    """--user prints the seed's IAM policy; --kms-key-arn adds the key statement."""
    key = "arn:aws:kms:us-east-1:111122223333:key/abc"
    result = invoke("policy", "--bucket", "shop", "--user", "--kms-key-arn", key)
    assert result.exit_code == 0, result.output
    statements = json.loads(result.stdout)["Statement"]
    assert statements[2]["Resource"] == ["arn:aws:s3:::shop/*"]
    assert statements[3]["Resource"] == [key]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bucket", "b"], "give exactly one of --role-arn ARN (role-based) or --user"),
        (
            ["--bucket", "b", "--user", "--role-arn", "arn:aws:iam::1:role/r"],
            "give exactly one of --role-arn ARN",
        ),
        (["--bucket", "b/*", "--user"], "--bucket expects a bucket name, got 'b/*'"),
        (["--bucket", "b", "--role-arn", "s3forward"], "--role-arn expects an ARN"),
        (["--bucket", "b", "--user", "--kms-key-arn", "abc"], "--kms-key-arn expects a key ARN"),
    ],
)
def test_policy_refuses_bad_options_with_exit_2(args: list[str], message: str) -> None:
    """Wrong policy options exit 2 with a message saying what is expected."""
    result = invoke("policy", *args)
    assert result.exit_code == 2
    assert message in result.stderr


# --------------------------------------------------------------------------- entry point


def test_console_script_validates_and_forwards_in_a_real_process(
    tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client
) -> None:
    """The installed ``s3forward`` script runs validate-config and forward end to end."""
    config = write_config(tmp_path / "c.toml", bucket=bucket, endpoint=moto_server)
    env = {"PATH": "/usr/bin:/bin", SECRET_ENV: SECRET, "HOME": str(tmp_path)}
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    checked = subprocess.run(
        [str(SCRIPT), "validate-config", str(config)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert SECRET.encode() not in checked.stdout + checked.stderr
    forwarded = subprocess.run(
        [str(SCRIPT), "forward", "--config", str(config), "-"],
        input=SDK_EXAMPLE.read_bytes(),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert forwarded.returncode == 0, forwarded.stderr
    (key,) = keys(s3_client, bucket)
    assert forwarded.stdout.decode().startswith(key + "\t")


def test_console_script_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    """The real script exits 2 on an invalid config and prints no traceback."""
    config = write_config(tmp_path / "c.toml", connection_extra="")
    done = subprocess.run(
        [str(SCRIPT), "validate-config", str(config)],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", SECRET_ENV: SECRET},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert UNSELECTED_MESSAGE.encode() in done.stderr
    assert b"Traceback" not in done.stderr
