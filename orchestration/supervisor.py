"""``firstmile up``: the whole platform on one machine, started in order and stopped cleanly.

Order: broker (embedded Tansu unless ``KAFKA_BROKER_ADDRESS`` is set) → topics → bootstrap policy (only when
``control.policy`` is empty) → collector, worker(s), lake sink → Dagster (``dagster dev``: webserver + daemon) →
MLflow UI. Every child runs in its own process group (``start_new_session=True``) and is stopped by signalling the
group: ``dagster dev`` started with a plain ``&`` ignores SIGTERM and leaves its webserver and daemon children
behind (STACK-FACTS.md), and ``mlflow server`` forks uvicorn workers the same way.

Stop order is the reverse of start order, so the lake sink flushes what the workers produced before the broker
goes away. The embedded broker keeps everything in memory: the lake and the DuckDB file are the durable record.

While it runs, a child that exits on its own (a crash, an OOM kill, ``kill -9``) is restarted alone, with the
backoff of :mod:`streaming.restarts` (1 s doubling to 30 s; given up after 5 exits in a row each within 60 s of its
start), each exit logged with its code; what is left of its process group is stopped first (a killed ``python -m
streaming.delivery`` leaves its lanes, a killed ``dagster dev`` its webserver on the port). A child given up on
stays down and the others keep running (``firstmile up`` then exits 1 when stopped). The embedded broker is the one
essential component: it holds every topic, offset and control record in memory, so a restarted broker would be
empty and every consumer would start over on nothing; its exit stops the whole platform, loudly.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.children import Child, PlatformError, http_ok, spawn, stop_group, wait_until
from orchestration.settings import OrchestrationSettings
from streaming.broker import EmbeddedBroker, create_topics
from streaming.collector.config import CollectorSettings
from streaming.restarts import RestartPolicy, decide_restart
from streaming.settings import StreamingSettings

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class PlatformOptions:
    """What ``firstmile up`` starts, and where. Ports 0 pick a free port."""

    data_dir: Path
    host: str = "127.0.0.1"
    workers: int = 1
    collector_port: int = 8080
    serving_port: int = 8090
    dagster_port: int = 3000
    mlflow_port: int = 5000
    dagster: bool = True
    mlflow: bool = True
    #: ``dagster dev`` is ready after 20-25 s here (STACK-FACTS.md); a cold import can take longer.
    ready_timeout_s: float = 120.0
    #: When a child that exited on its own is started again (streaming/restarts.py).
    restart: RestartPolicy = field(default_factory=RestartPolicy)


@dataclass
class Platform:
    """Running components, in start order. :meth:`stop` is idempotent."""

    options: PlatformOptions
    broker_address: str = ""
    write_key: str = ""
    server_key: str = ""
    delivery: str = ""
    embedded: EmbeddedBroker | None = None
    children: list[Child] = field(default_factory=list)
    _stopped: bool = False

    def addresses(self) -> dict[str, str]:
        out = {"broker": self.broker_address}
        out.update({c.name: c.url for c in self.children if c.url})
        return out

    def pids(self) -> list[int]:
        pids = [c.process.pid for c in self.children]
        if self.embedded is not None:
            pids.append(self.embedded.process.pid)
        return pids

    def dead(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]

    def broker_alive(self) -> bool:
        return self.embedded is None or self.embedded.process.poll() is None

    def supervise(self, echo: Callable[[str], None] = print, *, now: float | None = None) -> None:
        """One round: note children that exited (and stop what is left of their group), start those due again.
        Each child on its own; see the module docstring."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.gave_up:
                continue
            if child.restart_at is None and not child.alive():
                self._exited(child, echo, now)
            elif child.restart_at is not None and now >= child.restart_at:
                self._restart(child, echo, now)

    def _exited(self, child: Child, echo: Callable[[str], None], now: float) -> None:
        code = child.process.returncode
        child.exits.append(code)
        stop_group(child.process, name=f"{child.name} (what is left of its group)", grace_s=5.0)
        decision = decide_restart(self.options.restart, started_at=child.started_at, exited_at=now,
                                  rapid_failures=child.rapid_failures)
        child.rapid_failures = decision.rapid_failures
        ran_s = now - child.started_at
        if decision.delay_s is None:
            child.gave_up = True
            logger.error("%s exited with %s after %.0fs: %d failures in a row, giving up on it (see %s); the "
                         "other components keep running", child.name, code, ran_s, decision.rapid_failures,
                         child.log)
            echo(f"GAVE UP on {child.name}: exited with {code}, {decision.rapid_failures} times in a row within "
                 f"{self.options.restart.healthy_after_s:.0f}s of its start (see {child.log}); the rest keeps "
                 f"running")
            return
        child.restart_at = now + decision.delay_s
        logger.warning("%s exited with %s after %.0fs; restarting in %.0fs", child.name, code, ran_s,
                       decision.delay_s)
        echo(f"{child.name} exited with {code} after {ran_s:.0f}s (see {child.log}); restarting in "
             f"{decision.delay_s:.0f}s")

    def _restart(self, child: Child, echo: Callable[[str], None], now: float) -> None:
        with child.log.open("ab") as out:
            out.write(f"--- firstmile up: restarting {child.name} (last exit {child.exits[-1]})\n".encode())
        fresh = spawn(child.name, child.argv, child.env, child.log.parent, url=child.url)
        child.process, child.started_at, child.restart_at = fresh.process, now, None
        echo(f"{child.name} restarted (pid {child.process.pid})")

    def gave_up(self) -> list[Child]:
        return [c for c in self.children if c.gave_up]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for child in reversed(self.children):
            stop_group(child.process, name=child.name)
        if self.embedded is not None:
            self.embedded.stop()


def dev_write_key(configured: str) -> tuple[str, str]:
    """The write keys the collector gets, and the one to print.

    ``configured`` (``FIRSTMILE_WRITE_KEYS``) when set (its first key is printed); otherwise a key generated for
    this run only, for source ``dev``.
    """
    spec = configured.strip()
    if spec:
        return spec, spec.replace("\n", ",").split(",")[0].split(":")[0].strip()
    key = "dev-" + secrets.token_hex(8)
    return f"{key}:dev", key


def _port(value: int) -> int:
    from streaming.broker import free_port

    return value or free_port()


def ensure_bootstrap_policy(address: str, settings: StreamingSettings) -> int | None:
    """Publish policy v1 if ``control.policy`` holds nothing; return the version published, else None.

    Counted by consuming to the end (Tansu's watermarks under-report, STACK-FACTS.md), never by watermark.
    """
    from streaming.control import PolicyReader, publish_policy
    from streaming.policy import PolicyHolder, bootstrap_policy
    from streaming.settings import CONTROL_POLICY

    topic = settings.topic(CONTROL_POLICY)
    reader = PolicyReader(address, topic, PolicyHolder())
    reader.start()
    try:
        reader.wait_caught_up()
    finally:
        reader.stop()
        reader.join(5)
    if reader.seen:
        return None
    return publish_policy(address, topic, bootstrap_policy())


def start_platform(options: PlatformOptions, *, streaming: CollectorSettings, orchestration: OrchestrationSettings,
                   environ: dict[str, str] | None = None, echo: Callable[[str], None] = print) -> Platform:
    """Start every component and wait until each answers. On any failure, stop what was started and raise.

    ``streaming`` and ``orchestration`` are the command's settings (broker, topics and write keys; dbt): the
    children get ``environ`` (default: this process's environment, so they read the same settings) with the
    addresses, data directory and instance of this run on top.
    """
    from warehouse.layout import DataLayout

    base_env = dict(os.environ if environ is None else environ)
    data_dir = options.data_dir.resolve()
    layout = DataLayout(data_dir).ensure()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    platform = Platform(options=options)
    try:
        if streaming.embedded:
            platform.embedded = EmbeddedBroker.start(log_path=logs / "broker.log")
            platform.broker_address = platform.embedded.address
        else:
            platform.broker_address = streaming.kafka_broker_address
        create_topics(platform.broker_address, streaming)
        published = ensure_bootstrap_policy(platform.broker_address, streaming)
        if published is not None:
            echo(f"published bootstrap policy v{published} to {streaming.topic('control.policy')}")

        keys, platform.write_key = dev_write_key(streaming.write_keys)
        platform.server_key = streaming.server_keys.split(",")[0].strip() or "srv-dev-" + secrets.token_hex(8)
        env = {**base_env, "KAFKA_BROKER_ADDRESS": platform.broker_address, "FIRSTMILE_DATA_DIR": str(data_dir),
               "FIRSTMILE_WRITE_KEYS": keys, "FIRSTMILE_SERVER_KEYS": streaming.server_keys or platform.server_key,
               "DAGSTER_HOME": str(layout.dagster_home), "PYTHONUNBUFFERED": "1"}
        py = sys.executable
        bin_dir = Path(py).parent

        collector_port = _port(options.collector_port)
        collector = spawn("collector", [py, "-m", "streaming.collector"],
                           {**env, "FIRSTMILE_COLLECTOR_HOST": options.host,
                            "FIRSTMILE_COLLECTOR_PORT": str(collector_port)}, logs,
                           url=f"http://{options.host}:{collector_port}")
        platform.children.append(collector)
        for i in range(options.workers):
            platform.children.append(spawn(f"worker-{i + 1}", [py, "-m", "streaming.worker"], env, logs))
        platform.children.append(spawn("lake-sink", [py, "-m", "streaming.lake_sink"], env, logs))
        destinations = streaming.destinations_file
        if destinations.exists():
            from streaming.delivery.app import create_delivery_topics
            from streaming.delivery.config import load_destinations

            declared = load_destinations(destinations)  # a config error names the field before anything runs
            create_delivery_topics(platform.broker_address, streaming, declared)
            platform.children.append(spawn("delivery", [py, "-m", "streaming.delivery"],
                                            {**env, "FIRSTMILE_DESTINATIONS_FILE": str(destinations.resolve())},
                                            logs))
            platform.delivery = f"{len(declared.destinations)} destinations from {destinations}"
        else:
            platform.delivery = f"not started: no destinations file ({destinations}; FIRSTMILE_DESTINATIONS_FILE)"
        serving_port = _port(options.serving_port)
        serving = spawn("serving", [py, "-m", "streaming.serving"],
                         {**env, "FIRSTMILE_SERVING_HOST": options.host, "FIRSTMILE_SERVING_PORT": str(serving_port)},
                         logs, url=f"http://{options.host}:{serving_port}")
        platform.children.append(serving)

        dagster = mlflow = None
        if options.dagster:
            from orchestration.environment import ensure_dbt_manifest

            ensure_dbt_manifest(orchestration)
            port = _port(options.dagster_port)
            dagster = spawn("dagster", [str(bin_dir / "dagster"), "dev", "-m", "orchestration.definitions",
                                         "-h", options.host, "-p", str(port)], env, logs,
                             url=f"http://{options.host}:{port}")
            platform.children.append(dagster)
        if options.mlflow:
            port = _port(options.mlflow_port)
            mlflow = spawn("mlflow", [str(bin_dir / "mlflow"), "server", "--workers", "1", "--host", options.host,
                                       "--port", str(port), "--backend-store-uri", layout.mlflow_tracking_uri,
                                       "--default-artifact-root", layout.mlflow_artifacts.as_uri()],
                            {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, logs,
                            url=f"http://{options.host}:{port}")
            platform.children.append(mlflow)

        wait_until(lambda: http_ok(f"{collector.url}/healthz"), what="collector", timeout=options.ready_timeout_s,
                   watch=collector)
        wait_until(lambda: http_ok(f"{serving.url}/readyz"), what="serving", timeout=options.ready_timeout_s,
                   watch=serving)
        if mlflow is not None:
            wait_until(lambda: http_ok(f"{mlflow.url}/health"), what="MLflow", timeout=options.ready_timeout_s,
                       watch=mlflow)
        if dagster is not None:
            wait_until(lambda: http_ok(f"{dagster.url}/server_info"), what="Dagster",
                       timeout=options.ready_timeout_s, watch=dagster)
        dead = platform.dead()
        if dead:
            raise PlatformError(f"{dead[0].name} exited with {dead[0].process.returncode}; see {dead[0].log}")
    except BaseException:
        platform.stop()
        raise
    return platform


def format_addresses(platform: Platform) -> str:
    addresses = platform.addresses()
    lines = ["firstmile is up:"]
    labels = {"broker": "Kafka broker", "collector": "collector (Segment HTTP API)",
              "serving": "serving (live profile API)", "dagster": "Dagster UI", "mlflow": "MLflow UI"}
    for name, label in labels.items():
        if name in addresses:
            lines.append(f"  {label:<30} {addresses[name]}")
    workers = [c.name for c in platform.children if c.name.startswith("worker-")]
    lines.append(f"  {'hot-path workers':<30} {len(workers)} (+ lake sink → {platform.options.data_dir.resolve()}"
                 "/lake)")
    lines.append(f"  {'delivery':<30} {platform.delivery}")
    lines.append(f"  {'dev write key':<30} {platform.write_key}")
    lines.append(f"  {'server key (profiles, erasure)':<30} {platform.server_key}")
    if "collector" in addresses:
        lines.append(f"  try: curl -u {platform.write_key}: -H 'content-type: application/json' "
                     f"-d '{{\"type\":\"track\",\"event\":\"Hello\",\"anonymousId\":\"a1\",\"messageId\":\"m1\"}}' "
                     f"{addresses['collector']}/v1/track")
    if "serving" in addresses:
        lines.append(f"  then: curl -u {platform.server_key}: '{addresses['serving']}/v1/profiles?anonymousId=a1'")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def run_platform(options: PlatformOptions, *, streaming: CollectorSettings, orchestration: OrchestrationSettings,
                 echo: Callable[[str], None] = print) -> int:
    """Start, print the addresses, restart components that exit (module docstring) until Ctrl-C/SIGTERM or the
    embedded broker's exit, stop everything.

    Returns 0 on a requested stop with every component running, 1 when the broker died or a component was given
    up on.
    """
    stop = threading.Event()
    received: list[int] = []
    started = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()
        if not started.is_set():
            # still starting: unwind start_platform, which stops what it already started
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    platform: Platform | None = None
    try:
        try:
            platform = start_platform(options, streaming=streaming, orchestration=orchestration, echo=echo)
        except KeyboardInterrupt:
            echo("interrupted while starting; stopped what had started.")
            return 0
        started.set()
        echo(format_addresses(platform))
        while not stop.wait(0.5):
            if not platform.broker_alive():
                assert platform.embedded is not None
                echo(f"the embedded broker exited with {platform.embedded.process.returncode} (see "
                     f"{options.data_dir / 'logs' / 'broker.log'}): everything it held is gone; stopping the "
                     f"platform")
                return 1
            platform.supervise(echo)
        echo(f"received {signal.Signals(received[0]).name}: stopping…")
        given_up = platform.gave_up()
        if given_up:
            echo("given up on while running: " + ", ".join(f"{c.name} (exit {c.exits[-1]})" for c in given_up))
        return 1 if given_up else 0
    finally:
        if platform is not None:
            platform.stop()
            echo("firstmile stopped.")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
