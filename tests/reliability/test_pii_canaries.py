"""Scenario 6, PII canaries (shared stream, traffic.py): known canary emails, phone numbers and IPs are seeded into
the traits, properties, free text, page URLs and context.ip of US people (consent granted by default, so their
events reach the warehouse), and into three invalid events. After the hot path, the lake sink, a real
``dbt build`` and the ML training (ml.loop.train_propensity_run), every store is scanned for them in clear:

* every topic except events.raw (all records, keys and values, changelogs and repartition topics included);
* every Parquet file (its bytes, and its decoded values: binary columns as text);
* every DuckDB table and view (every column cast to text);
* every MLflow file (artifacts, zipped model members, the tracking database).

The DLQ decision (README.md, "PII and the DLQ"): events.dlq keeps the original bytes of invalid events by design
(so they can be replayed after a fix), which makes it raw tier like events.raw: it is exempt from the topic scan
but must have events.raw's short retention. Nothing durable may keep them in clear: the lake's dlq stream and the
warehouse are scanned like everything else.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from streaming import settings as topics
from tests.reliability.harness import consume, figure, list_topics
from tests.reliability.traffic import CANARY_EMAILS, CANARY_PHONES

pytestmark = pytest.mark.integration

FREE_TEXT_BUG = ("B5: pii.scrub hashes phone numbers only when a whole string is one, and IPs only under the key "
                 "'ip': a phone or an IP inside free text (or under keys like ip_address) reaches destinations, "
                 "the lake and the warehouse in clear")
DLQ_BUG = ("B6: the DLQ is raw tier but events.dlq gets the 7-day retention of decided topics, and the lake sink "
           "copies its original bytes (clear PII) into the durable lake/dlq stream and the warehouse")


def needles(traffic) -> list[bytes]:
    out = [e.encode() for e in CANARY_EMAILS] + [ip.encode() for ip in traffic.canary_ips]
    for phone in CANARY_PHONES:
        out += [phone.encode(), re.sub(r"\D", "", phone).encode()]
    return out


def hits_in(blob: bytes, ns: list[bytes]) -> int:
    low = blob.lower()
    return sum(low.count(n.lower()) for n in ns)


def scan_topics(traffic, ns):
    names = [t for t in list_topics(traffic.platform.address) if t not in (topics.RAW, topics.DLQ)]
    hits: Counter[str] = Counter()
    for topic, _p, _o, key, value in consume(traffic.platform.address, names, idle=2.0, raw=True):
        n = hits_in((key or b"") + b"\n" + (value or b""), ns)
        if n:
            hits[topic] += n
    return names, hits


def parquet_text(path: Path) -> bytes:
    frame = pl.read_parquet(path)
    parts = []
    for name in frame.columns:
        col = frame[name]
        if col.dtype == pl.Binary:
            parts += [v.decode("utf-8", "replace") for v in col.drop_nulls().to_list()]
        else:
            parts += [str(v) for v in col.drop_nulls().to_list()]
    return "\n".join(parts).encode("utf-8", "replace")


def scan_parquet(traffic, ns):
    hits: Counter[str] = Counter()
    files = sorted(traffic.data_dir.rglob("*.parquet"))
    for path in files:
        n = hits_in(path.read_bytes(), ns) + hits_in(parquet_text(path), ns)
        if n:
            hits[str(path.relative_to(traffic.data_dir)).split("/event_date=")[0]] += n
    return files, hits


def scan_duckdb(traffic, ns):
    con = duckdb.connect(str(traffic.duckdb_path), read_only=True)
    pattern = "|".join(re.escape(n.decode().lower()) for n in ns)
    hits: Counter[str] = Counter()
    relations = con.execute("select table_schema, table_name from information_schema.tables").fetchall()
    try:
        for schema, table in relations:
            cols = [r[0] for r in con.execute(
                "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
                [schema, table]).fetchall()]
            if not cols:
                continue
            text = " || '|' || ".join(f"coalesce(cast(\"{c}\" as varchar), '')" for c in cols)
            n = con.execute(f"select count(*) from \"{schema}\".\"{table}\" "
                            f"where regexp_matches(lower({text}), ?)", [pattern]).fetchone()[0]
            if n:
                hits[table] += n
    finally:
        con.close()
    return relations, hits


def scan_mlflow(traffic, ns):
    hits: Counter[str] = Counter()
    files = [p for p in (traffic.data_dir / "mlflow").rglob("*") if p.is_file()]
    for path in files:
        blob = path.read_bytes()
        n = hits_in(blob, ns)
        if zipfile.is_zipfile(io.BytesIO(blob)):
            with zipfile.ZipFile(io.BytesIO(blob)) as zf:
                n += sum(hits_in(zf.read(member), ns) for member in zf.namelist())
        if n:
            hits[path.name] += n
    return files, hits


@pytest.fixture(scope="module")
def scans(traffic):
    assert not traffic.dbt_failure, traffic.dbt_failure
    ns = needles(traffic)
    raw_hits = sum(hits_in(v or b"", ns) for *_, v in consume(traffic.platform.address, [topics.RAW], raw=True,
                                                               idle=1.5))
    by_origin = traffic.by_origin()
    canary_routed = sum(1 for w, m in zip(traffic.where, traffic.meta, strict=True)
                        if m.get("canary") and m["canary"] != "dlq"
                        and any(t == topics.DEST_WAREHOUSE for t, _ in by_origin.get(w, [])))
    return {"needles": ns, "raw_hits": raw_hits, "canary_routed": canary_routed,
            "topics": scan_topics(traffic, ns), "parquet": scan_parquet(traffic, ns),
            "duckdb": scan_duckdb(traffic, ns), "mlflow": scan_mlflow(traffic, ns)}


def is_dlq(name: str) -> bool:
    return "dlq" in name


def test_canaries_went_in_and_the_ml_training_ran(traffic, scans):
    figure("6 PII canaries: seeded", f"{len(CANARY_EMAILS)} emails, {len(CANARY_PHONES)} phones, "
           f"{len(traffic.canary_ips)} IPs",
           hits_in_events_raw=scans["raw_hits"], canary_events_routed_to_warehouse=scans["canary_routed"],
           mlflow_files=len(scans["mlflow"][0]), ml_failure=traffic.ml_failure.splitlines()[-1:] or "none")
    assert scans["raw_hits"] > 0 and scans["canary_routed"] > 0
    assert not traffic.ml_failure, traffic.ml_failure
    assert scans["mlflow"][0], "the ML training wrote no MLflow files"


def test_no_clear_pii_on_any_topic_but_the_raw_tier(scans):
    names, hits = scans["topics"]
    figure("6 PII canaries: topics", f"{len(names)} topics scanned (all but events.raw, events.dlq)",
           clear_text_hits=sum(hits.values()), **dict(hits))
    assert not hits


def test_no_clear_pii_in_the_lake_the_warehouse_or_mlflow(scans):
    files, p_hits = scans["parquet"]
    relations, d_hits = scans["duckdb"]
    m_files, m_hits = scans["mlflow"]
    p_hits = {k: v for k, v in p_hits.items() if not is_dlq(k)}
    d_hits = {k: v for k, v in d_hits.items() if not is_dlq(k)}
    figure("6 PII canaries: stores", f"{len(files)} Parquet files, {len(relations)} DuckDB relations, "
           f"{len(m_files)} MLflow files (DLQ-derived data: next test)",
           parquet_hits=sum(p_hits.values()), duckdb_hits=sum(d_hits.values()), mlflow_hits=sum(m_hits.values()),
           where=sorted({**p_hits, **d_hits, **m_hits}))
    assert not p_hits and not d_hits and not m_hits


def test_the_dlq_is_raw_tier_and_its_originals_never_reach_durable_stores(traffic, scans):
    admin = AdminClient({"bootstrap.servers": traffic.platform.address})
    retention = {}
    for name in (topics.RAW, topics.DLQ):
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        retention[name] = int(config["retention.ms"].value)
    p_hits = {k: v for k, v in scans["parquet"][1].items() if is_dlq(k)}
    d_hits = {k: v for k, v in scans["duckdb"][1].items() if is_dlq(k)}
    figure("6 PII canaries: DLQ", "events.dlq is raw tier: short retention, no durable clear copy",
           raw_retention_h=retention[topics.RAW] / 3.6e6, dlq_retention_h=retention[topics.DLQ] / 3.6e6,
           lake_dlq_hits=sum(p_hits.values()), warehouse_dlq_hits=sum(d_hits.values()))
    assert retention[topics.DLQ] <= retention[topics.RAW]
    assert not p_hits and not d_hits
