"""Right to be forgotten in the model store: does any MLflow artefact still hold an erased person's identifiers?

The erasure job (``orchestration/defs/regulations.py``) calls :func:`scan_tracking_store` with the identifiers the
warehouse found for a request (its rows of ``erasure_suppression_list``) after the lake and the warehouse were
rewritten. What is scanned, in every experiment (deleted ones too, they stay on disk until ``mlflow gc``):

* runs: name, params (keys and values), tags (the note included), and every artifact file;
* logged models (MLflow 3's ``log_model``): params, tags and every artifact file;
* registered models and their versions: descriptions, tags, and the version's source artefacts.

A file is searched for the identifier's UTF-8 bytes; zip archives (``.skops``, ``.zip``) member by member, since
compression hides the bytes; Parquet files by value (their pages are compressed). A file over ``max_file_bytes``
is listed as not scanned. Identifiers shorter than :data:`MIN_IDENTIFIER_LENGTH` are not searched for (they would
match almost any file) and are counted.

A hit in a tag is removable and removed (``delete_tag`` and friends); a hit anywhere else (a param, an artifact, a
description) cannot be undone through the tracking API (params are immutable, artifacts are the run's record) and
is returned as remaining: the caller marks the request ``failed`` with where they are. Nothing returned names an
identifier: a location is the object's id and the key or artifact path.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

MIN_IDENTIFIER_LENGTH = 4
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Hit:
    """Where an identifier was found: ``kind`` (run_param, run_tag, run_artifact, model_tag, ...) and the object."""

    kind: str
    location: str
    removed: bool = False


@dataclass
class ArtefactScan:
    """What :func:`scan_tracking_store` looked at and found."""

    identifiers: int = 0
    identifiers_too_short: int = 0
    experiments: int = 0
    runs: int = 0
    logged_models: int = 0
    registered_models: int = 0
    model_versions: int = 0
    artifact_files: int = 0
    artifact_bytes: int = 0
    hits: list[Hit] = field(default_factory=list)
    unscanned: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> list[Hit]:
        return [h for h in self.hits if not h.removed]

    def summary(self) -> dict[str, Any]:
        """Counts, and where the hits that remain are (no identifier): the request state's detail."""
        return {"identifiers": self.identifiers, "identifiers_too_short": self.identifiers_too_short,
                "experiments": self.experiments, "runs": self.runs, "logged_models": self.logged_models,
                "registered_models": self.registered_models, "model_versions": self.model_versions,
                "artifact_files": self.artifact_files, "artifact_bytes": self.artifact_bytes,
                "hits": len(self.hits), "removed": len(self.hits) - len(self.remaining),
                "remaining": [f"{h.kind} {h.location}" for h in self.remaining][:50],
                "unscanned": self.unscanned[:50]}


class _Matcher:
    def __init__(self, identifiers: Iterable[str]) -> None:
        values = {str(v) for v in identifiers if v}
        self.values = sorted(v for v in values if len(v) >= MIN_IDENTIFIER_LENGTH)
        self.too_short = len(values) - len(self.values)
        self._bytes = [v.encode("utf-8") for v in self.values]

    def text(self, value: Any) -> bool:
        return value is not None and any(v in str(value) for v in self.values)

    def data(self, blob: bytes) -> bool:
        return any(v in blob for v in self._bytes)


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _parquet_hit(path: Path, match: _Matcher) -> bool:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for column in table.columns:
        text = pc.cast(column, "string", safe=False) if not column.type.equals("string") else column
        for value in match.values:
            if pc.any(pc.match_substring(text, value)).as_py():
                return True
    return False


def _file_hit(path: Path, match: _Matcher) -> bool:
    if path.suffix == ".parquet":
        return _parquet_hit(path, match)
    blob = path.read_bytes()
    if match.data(blob):
        return True
    if zipfile.is_zipfile(io.BytesIO(blob)):
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            return any(match.data(archive.read(member)) for member in archive.namelist())
    return False


class _Scanner:
    def __init__(self, client: MlflowClient, match: _Matcher, result: ArtefactScan, max_file_bytes: int,
                 remove: bool) -> None:
        self.client, self.match, self.result = client, match, result
        self.max_file_bytes, self.remove = max_file_bytes, remove

    def hit(self, kind: str, location: str, removal: Callable[[], None] | None = None) -> None:
        removed = False
        if removal is not None and self.remove:
            removal()
            removed = True
        self.result.hits.append(Hit(kind, location, removed))
        logger.warning("erased identifier found in MLflow: %s %s%s", kind, location, " (removed)" if removed else "")

    def key(self, key: str) -> str:
        return "<key holding an identifier>" if self.match.text(key) else key

    def fields(self, kind: str, owner: str, values: dict[str, Any],
               removal: Callable[[str], None] | None = None) -> None:
        for key, value in values.items():
            if self.match.text(key) or self.match.text(value):
                self.hit(kind, f"{owner} {self.key(key)}",
                         functools.partial(removal, key) if removal is not None else None)

    def artifacts(self, kind: str, owner: str, uri: str | None) -> None:
        if not uri:
            return
        with tempfile.TemporaryDirectory(prefix="firstmile-scan-") as tmp:
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            except (MlflowException, OSError) as exc:
                if "No such file" in str(exc) or isinstance(exc, FileNotFoundError):
                    return  # nothing logged under it
                self.result.unscanned.append(f"{kind} {owner}: {type(exc).__name__}")
                return
            files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
            for path in files:
                relative = path.name if local.is_file() else str(path.relative_to(local))
                size = path.stat().st_size
                if size > self.max_file_bytes:
                    self.result.unscanned.append(f"{kind} {owner} {relative}: {size} bytes")
                    continue
                self.result.artifact_files += 1
                self.result.artifact_bytes += size
                if _file_hit(path, self.match):
                    self.hit(kind, f"{owner} {relative}")


def scan_tracking_store(tracking_uri: str, identifiers: Iterable[str], *, remove_from_tags: bool = True,
                        max_file_bytes: int = MAX_FILE_BYTES) -> ArtefactScan:
    """Search the MLflow store at ``tracking_uri`` (tracking and registry) for ``identifiers``; remove hits in tags
    when ``remove_from_tags`` (the default). See the module docstring for what is scanned."""
    match = _Matcher(identifiers)
    result = ArtefactScan(identifiers=len(match.values), identifiers_too_short=match.too_short)
    if not match.values:
        return result
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    scan = _Scanner(client, match, result, max_file_bytes, remove_from_tags)
    with _artifacts_from(tracking_uri):
        experiments = list(_pages(lambda t: client.search_experiments(view_type=ViewType.ALL, page_token=t)))
        result.experiments = len(experiments)
        ids = [e.experiment_id for e in experiments]
        if ids:
            _scan_runs(client, scan, ids)
            _scan_logged_models(client, scan, ids)
        _scan_registry(client, scan)
    return result


@contextlib.contextmanager
def _artifacts_from(tracking_uri: str) -> Iterator[None]:
    """Artifact downloads resolve ``mlflow-artifacts:`` URIs through the global tracking URI (a server's proxied
    store), and draw progress bars unless told not to: both for the scan only, restored after."""
    previous_uri = mlflow.get_tracking_uri()
    previous_bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    mlflow.set_tracking_uri(tracking_uri)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous_bar


def _scan_runs(client: MlflowClient, scan: _Scanner, experiment_ids: list[str]) -> None:
    for run in _pages(lambda t: client.search_runs(experiment_ids, run_view_type=ViewType.ALL, max_results=1000,
                                                   page_token=t)):
        scan.result.runs += 1
        run_id = run.info.run_id
        if scan.match.text(run.info.run_name):
            scan.hit("run_name", f"run {run_id}")
        scan.fields("run_param", f"run {run_id}", dict(run.data.params))
        scan.fields("run_tag", f"run {run_id}", dict(run.data.tags), functools.partial(client.delete_tag, run_id))
        scan.artifacts("run_artifact", f"run {run_id}", run.info.artifact_uri)


def _scan_logged_models(client: MlflowClient, scan: _Scanner, experiment_ids: list[str]) -> None:
    for model in _pages(lambda t: client.search_logged_models(experiment_ids, page_token=t)):
        scan.result.logged_models += 1
        owner = f"logged model {model.model_id}"
        scan.fields("model_param", owner, dict(model.params or {}))
        scan.fields("model_tag", owner, dict(model.tags or {}),
                    functools.partial(client.delete_logged_model_tag, model.model_id))
        scan.artifacts("model_artifact", owner, model.artifact_location)


def _versions_page(client: MlflowClient, name: str, token: str | None) -> Any:
    return client.search_model_versions(f"name='{name}'", page_token=token)


def _scan_registry(client: MlflowClient, scan: _Scanner) -> None:
    for registered in _pages(lambda t: client.search_registered_models(page_token=t)):
        scan.result.registered_models += 1
        name = registered.name
        if scan.match.text(registered.description):
            scan.hit("registered_model_description", f"model {name}")
        scan.fields("registered_model_tag", f"model {name}", dict(registered.tags or {}),
                    functools.partial(client.delete_registered_model_tag, name))
        for version in _pages(functools.partial(_versions_page, client, name)):
            scan.result.model_versions += 1
            owner = f"model {name} v{version.version}"
            if scan.match.text(version.description):
                scan.hit("model_version_description", owner)
            scan.fields("model_version_tag", owner, dict(version.tags or {}),
                        functools.partial(client.delete_model_version_tag, name, version.version))
            if version.source and not str(version.source).startswith(("models:/", "runs:/")):
                # a version registered from a path: its files are not a run's or a logged model's
                scan.artifacts("model_version_artifact", owner, version.source)
