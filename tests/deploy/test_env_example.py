""".env.example lists exactly the variables firstmile reads: every field of every settings class (by the name
pydantic-settings reads it from) and every variable docker-compose.yml reads; nothing else, each with a comment.

The settings classes are found in the source (every subclass of pydantic-settings' ``BaseSettings``, however
indirect), so a new class is covered without editing this test, and a new field fails it until it is documented.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from tests.deploy import compose_files as cf

PACKAGES = ("streaming", "warehouse", "ml", "orchestration")
#: Variables the docker compose command itself reads from .env (not interpolated in the file).
COMPOSE_CLI = {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(cf.REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def settings_classes() -> list[type[BaseSettings]]:
    """Every ``BaseSettings`` subclass defined in the packages, found by reading the source (no module with side
    effects is imported: only the modules that define one)."""
    defined: dict[str, tuple[str, set[str]]] = {}  # class name -> (module, base names)
    for package in PACKAGES:
        for path in sorted((cf.REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    bases = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
                    defined[node.name] = (_module_name(path), bases)
    names = {"BaseSettings"}
    while True:
        grown = names | {name for name, (_, bases) in defined.items() if bases & names}
        if grown == names:
            break
        names = grown
    names.discard("BaseSettings")
    classes = [getattr(importlib.import_module(defined[name][0]), name) for name in sorted(names)]
    assert all(issubclass(cls, BaseSettings) for cls in classes), classes
    return classes


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """field -> the environment variable pydantic-settings reads it from (case-insensitive, so upper-cased)."""
    prefix = cls.model_config.get("env_prefix", "")
    out = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        assert alias is None or isinstance(alias, str), (
            f"{cls.__name__}.{name}: teach env_names() this alias form ({alias!r}) before using it")
        out[name] = (alias or f"{prefix}{name}").upper()
    return out


def settings_variables() -> dict[str, str]:
    """Every variable a settings class reads -> the class fields that read it."""
    read: dict[str, list[str]] = {}
    for cls in settings_classes():
        for field, variable in env_names(cls).items():
            read.setdefault(variable, []).append(f"{cls.__name__}.{field}")
    return {variable: ", ".join(fields) for variable, fields in read.items()}


def test_the_settings_classes_are_found_in_the_source() -> None:
    found = {f"{cls.__module__}.{cls.__name__}" for cls in settings_classes()}
    assert {"streaming.settings.StreamingSettings", "streaming.collector.config.CollectorSettings",
            "warehouse.settings.WarehouseSettings", "orchestration.settings.OrchestrationSettings"} <= found


def test_env_names_are_the_names_pydantic_settings_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name computed for a field is the one that sets it: checked on one field of each kind (prefixed, alias)."""
    from orchestration.settings import OrchestrationSettings
    from streaming.settings import StreamingSettings

    names = env_names(StreamingSettings)
    monkeypatch.setenv(names["topic_prefix"], "acme.")
    monkeypatch.setenv(names["kafka_broker_address"], "kafka:9092")
    streaming = StreamingSettings()
    assert (streaming.topic_prefix, streaming.kafka_broker_address) == ("acme.", "kafka:9092")
    monkeypatch.setenv(env_names(OrchestrationSettings)["mlflow_tracking_uri"], "http://mlflow:5000")
    assert OrchestrationSettings().tracking_uri == "http://mlflow:5000"


def test_env_example_lists_every_variable_a_settings_class_reads() -> None:
    documented = cf.documented_names(cf.ENV_EXAMPLE)
    missing = {variable: fields for variable, fields in settings_variables().items() if variable not in documented}
    assert missing == {}, f"add to .env.example, with a comment: {missing}"


def test_env_example_lists_nothing_that_neither_a_settings_class_nor_the_compose_file_reads() -> None:
    stale = cf.documented_names(cf.ENV_EXAMPLE) - set(settings_variables()) - cf.variables_used() - COMPOSE_CLI
    assert stale == set(), f"nothing reads these: remove them from .env.example or read them: {sorted(stale)}"


def test_every_variable_in_env_example_is_listed_once_with_a_comment() -> None:
    seen: dict[str, int] = {}
    uncommented = []
    for line in cf.ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"\s*(?:#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
        if not match:
            continue
        seen[match.group(1)] = seen.get(match.group(1), 0) + 1
        if " # " not in f" {match.group(2)}":
            uncommented.append(match.group(1))
    assert uncommented == []
    assert {name: n for name, n in seen.items() if n > 1} == {}
