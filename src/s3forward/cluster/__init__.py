"""Cluster mode on NATS JetStream (issue 9).

Ingest nodes are stateless: they publish each validated batch to its partition's subject and
answer 202 after JetStream's replicated ack (``ingest.py``). Workers own partitions through KV
leases, replay each partition's log through the ordinary ``Windower`` on broker time, record each
seal in a fenced per-partition seal log before writing the object, and rebuild bytes
deterministically (``replay.py`` is the pure part, ``worker.py`` the I/O). ``admin.py`` creates
and checks streams and buckets. Wiring (``runtime.py``) is picked by ``serve`` when ``[cluster]``
is configured.
"""
