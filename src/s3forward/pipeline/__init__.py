"""The single-node pipeline's parts, each with one job, wired together by ``engine.Engine``.

``writer`` (group commit) -> ``ingest`` (cap, dedup, placement) -> ``windowbook`` (window state
and restore) -> ``buildloop`` (sealed windows into files) -> ``ledger`` (delivery bookkeeping).
Every part reaches the spool through the ``Spool`` Protocol only.
"""
