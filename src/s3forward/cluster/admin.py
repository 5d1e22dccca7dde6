"""``s3forward cluster init`` and ``cluster check``: streams and buckets, created and verified.

``init`` is idempotent: a stream or bucket that exists is updated to the configured settings
(JetStream refuses changes it cannot make, such as the replica count of a KV bucket, and init
says so). Retention of the data streams is ``retention_seconds``: the longest a window can stay
open (``max_session_age`` for per_session connections, ``batch_window`` otherwise) plus
``[cluster] outage_budget``, how long workers may be down or S3 unreachable before JetStream
would drop data that is still needed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext

from s3forward.cluster.connection import ClusterError, connect
from s3forward.cluster.naming import ClusterNames
from s3forward.config import BatchingMode, ClusterSettings, Config


def retention_seconds(config: Config, cluster: ClusterSettings) -> float:
    """How long the data streams keep a message: the longest window plus the outage budget."""
    longest = 0.0
    for settings in config.connections.values():
        if settings.batching_mode is BatchingMode.PER_SESSION:
            longest = max(longest, settings.max_session_age)
        else:
            longest = max(longest, settings.batch_window)
    return longest + cluster.outage_budget


def _stream_configs(config: Config, cluster: ClusterSettings) -> list[api.StreamConfig]:
    names = ClusterNames.of(cluster)
    out = [
        api.StreamConfig(
            name=name,
            subjects=subjects,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.NEW,
            max_bytes=cluster.max_stream_bytes,
            max_age=retention_seconds(config, cluster),
            storage=api.StorageType.FILE,
            num_replicas=cluster.replicas,
            duplicate_window=cluster.duplicate_window,
            allow_direct=True,
        )
        for name, subjects in names.data_streams().items()
    ]
    # The seal log: small records, kept until the workers purge them below the watermark.
    out.append(
        api.StreamConfig(
            name=names.seal_stream,
            subjects=[names.seal_subjects],
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.NEW,
            storage=api.StorageType.FILE,
            num_replicas=cluster.replicas,
            allow_direct=True,
        )
    )
    return out


async def _ensure_stream(js: JetStreamContext, wanted: api.StreamConfig) -> str:
    assert wanted.name is not None
    try:
        await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        return f"stream {wanted.name}: created ({wanted.num_replicas} replicas)"
    await js.update_stream(wanted)
    return f"stream {wanted.name}: present, settings applied"


async def _ensure_bucket(js: JetStreamContext, bucket: str, ttl: float, replicas: int) -> str:
    try:
        await js.key_value(bucket)
        return f"bucket {bucket}: present"
    except nats.js.errors.BucketNotFoundError:
        pass
    await js.create_key_value(bucket=bucket, history=1, ttl=ttl, replicas=replicas)
    return f"bucket {bucket}: created (ttl {ttl:g}s, {replicas} replicas)"


async def init_cluster(config: Config) -> list[str]:
    """Create or update every stream and bucket; returns one line per object."""
    cluster = _cluster(config)
    names = ClusterNames.of(cluster)
    nc = await connect(cluster, name="s3forward-init", persistent=False)
    try:
        js = nc.jetstream(timeout=10)
        lines = [await _ensure_stream(js, wanted) for wanted in _stream_configs(config, cluster)]
        lines.append(
            await _ensure_bucket(js, names.lease_bucket, cluster.lease_ttl, cluster.replicas)
        )
        lines.append(
            await _ensure_bucket(
                js, names.request_bucket, config.spool.dedup_window, cluster.replicas
            )
        )
        return lines
    except (nats.errors.Error, TimeoutError) as exc:
        raise ClusterError(f"creating streams and buckets failed: {exc}") from None
    finally:
        await nc.close()


@dataclass(frozen=True, slots=True)
class ClusterCheck:
    name: str
    ok: bool
    message: str
    fix: str = ""


async def check_cluster(config: Config) -> list[ClusterCheck]:
    """Servers reachable, streams and buckets present with their replicas, fsync always."""
    cluster = _cluster(config)
    names = ClusterNames.of(cluster)
    out: list[ClusterCheck] = []
    try:
        nc = await connect(cluster, name="s3forward-check", persistent=False)
    except ClusterError as exc:
        return [ClusterCheck("servers", False, str(exc), "start NATS or fix [cluster] servers")]
    try:
        out.append(
            ClusterCheck(
                "servers",
                True,
                f"connected to {nc.connected_url.netloc if nc.connected_url else '?'} "
                f"(nats-server {nc.connected_server_version})",
            )
        )
        js = nc.jetstream(timeout=10)
        for wanted in _stream_configs(config, cluster):
            out.append(await _check_stream(js, wanted))
        for bucket in (names.lease_bucket, names.request_bucket):
            try:
                status = await (await js.key_value(bucket)).status()
                replicas = status.stream_info.config.num_replicas
                out.append(
                    ClusterCheck(
                        f"bucket {bucket}",
                        replicas == cluster.replicas,
                        f"present, {replicas} replicas (configured {cluster.replicas})",
                        "" if replicas == cluster.replicas else "recreate it with cluster init",
                    )
                )
            except nats.js.errors.BucketNotFoundError:
                out.append(
                    ClusterCheck(
                        f"bucket {bucket}", False, "missing", "run `s3forward cluster init`"
                    )
                )
    except (nats.errors.Error, TimeoutError) as exc:
        out.append(ClusterCheck("jetstream", False, f"JetStream did not answer: {exc}"))
    finally:
        await nc.close()
    out.extend(_check_sync(cluster))
    return out


async def _check_stream(js: JetStreamContext, wanted: api.StreamConfig) -> ClusterCheck:
    assert wanted.name is not None
    name = f"stream {wanted.name}"
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        return ClusterCheck(name, False, "missing", "run `s3forward cluster init`")
    problems: list[str] = []
    if info.config.num_replicas != wanted.num_replicas:
        problems.append(f"{info.config.num_replicas} replicas, configured {wanted.num_replicas}")
    if info.config.discard != api.DiscardPolicy.NEW:
        problems.append("discard is 'old': JetStream would delete messages of open windows")
    lagging = [
        peer.name
        for peer in (info.cluster.replicas or [] if info.cluster else [])
        if not peer.current or peer.offline
    ]
    if lagging:
        problems.append(f"replicas not current: {', '.join(str(p) for p in lagging)}")
    leader = info.cluster.leader if info.cluster else None
    if problems:
        return ClusterCheck(name, False, "; ".join(problems), "run `s3forward cluster init`")
    return ClusterCheck(
        name, True, f"{info.config.num_replicas} replicas, leader {leader}, discard new"
    )


def _check_sync(cluster: ClusterSettings) -> list[ClusterCheck]:
    """``sync_interval: always`` can only be read from the servers' monitoring endpoint."""
    if not cluster.monitor_urls:
        return [
            ClusterCheck(
                "sync_interval",
                False,
                "cannot be verified: the client protocol does not show it. Without "
                "`sync_interval: always` JetStream acks before fsync and a power loss can lose "
                "acknowledged batches",
                "set `jetstream { sync_interval: always }` on every server and list their "
                "monitoring URLs in [cluster] monitor_urls",
            )
        ]
    out: list[ClusterCheck] = []
    for url in cluster.monitor_urls:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/varz", timeout=5) as response:  # noqa: S310 - an operator-configured monitoring URL
                varz = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            out.append(ClusterCheck(f"sync_interval {url}", False, f"unreachable: {exc}"))
            continue
        jetstream = varz.get("jetstream", {}).get("config", {})
        server = varz.get("server_name", url)
        if jetstream.get("sync_always"):
            out.append(ClusterCheck(f"sync_interval {server}", True, "always (fsync per write)"))
        else:
            out.append(
                ClusterCheck(
                    f"sync_interval {server}",
                    False,
                    "not 'always': acks come before fsync; a power loss can lose acked batches",
                    "set `jetstream { sync_interval: always }` and restart the server",
                )
            )
    return out


def _cluster(config: Config) -> ClusterSettings:
    if config.cluster is None:
        raise ClusterError("the configuration has no [cluster] section")
    return config.cluster


__all__ = ["ClusterCheck", "check_cluster", "init_cluster", "retention_seconds"]
