"""docker-compose.yml checked offline: the Compose specification's JSON schema, and that everything it names exists.

No container engine runs here, so these tests are what stands between a typo and a broken `docker compose up`:
the schema (tests/deploy/data/compose-spec.json, from compose-spec/compose-spec schema/compose-spec.json), the
build contexts and Dockerfiles, the modules each command runs, and the variables it reads (all in .env.example).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy import compose_files as cf

FIRSTMILE_DOCKERFILES = {"docker/worker.Dockerfile", "docker/platform.Dockerfile"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|WRITE_KEYS")


def _required_env() -> dict[str, str]:
    return {name: f"test-{name.lower()}-value" for name in cf.required_variables()}


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(cf.SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The effective model with defaults and the required variables set (what `docker compose config` sees)."""
    return cf.load(_required_env())


def _errors(validator: jsonschema.Draft7Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def _firstmile_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") in FIRSTMILE_DOCKERFILES}


# ---- the specification ---------------------------------------------------------------------------------------------

def test_compose_file_is_valid_against_the_compose_specification_schema_before_and_after_interpolation(
        schema_validator: jsonschema.Draft7Validator, compose: dict[str, Any]) -> None:
    assert _errors(schema_validator, cf.load_raw()) == []
    assert _errors(schema_validator, compose) == []


def test_schema_validation_rejects_a_misspelled_service_key(schema_validator: jsonschema.Draft7Validator,
                                                             compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["comand"] = ["python", "-m", "streaming.worker"]
    assert any("comand" in error for error in _errors(schema_validator, broken))


def test_compose_refuses_to_start_without_each_required_secret() -> None:
    for name in cf.required_variables():
        env = {k: v for k, v in _required_env().items() if k != name}
        with pytest.raises(cf.InterpolationError, match=name):
            cf.load(env)


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert cf.interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|$$SET|$SET", env) == "v|d||d|$SET|v"
    assert cf.interpolate("${UNSET:-${SET}-x}", env) == "v-x"
    assert cf.interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    with pytest.raises(cf.InterpolationError):
        cf.interpolate("${EMPTY:?needed}", env)


# ---- secrets and variables -------------------------------------------------------------------------------------------

def test_no_secret_is_written_in_the_compose_file_each_is_a_required_variable() -> None:
    """Every secret-looking environment entry is exactly ``${NAME:?message}``: no default, no literal."""
    raw = cf.load_raw()
    offenders = []
    for service_name, service in raw["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{service_name}: use the mapping form of environment"
        for key, value in environment.items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)):
                offenders.append(f"{service_name}.{key}={value}")
    assert offenders == []


def test_every_variable_the_compose_file_reads_is_listed_in_docker_env_vars_txt() -> None:
    used = cf.variables_used()
    assert used, "the compose file reads no variables: interpolation parsing is broken"
    assert sorted(used - cf.documented_names(cf.ENV_VARS_TXT)) == []


def test_every_variable_the_compose_file_reads_is_documented_in_env_example() -> None:
    if not cf.ENV_EXAMPLE.exists():
        pytest.skip(".env.example is absent: merge docker/env-vars.txt into it (this test then checks it)")
    missing = sorted(cf.variables_used() - cf.documented_names(cf.ENV_EXAMPLE))
    assert missing == [], f"add to .env.example (see docker/env-vars.txt): {missing}"


# ---- what the services build and run ------------------------------------------------------------------------------

def test_every_build_context_and_dockerfile_exists(compose: dict[str, Any]) -> None:
    built = _firstmile_services(compose)
    assert {"init-topics", "collector", "worker", "lake-sink", "dagster-webserver", "dagster-daemon",
            "mlflow"} <= set(built)
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            assert "image" in service, f"{name}: neither build nor image"
            continue
        context = (cf.REPO / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {build['context']} is missing"
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} is missing"


@pytest.mark.parametrize("dockerfile", sorted(FIRSTMILE_DOCKERFILES))
def test_every_file_a_dockerfile_copies_from_the_context_exists(dockerfile: str) -> None:
    missing = []
    for keyword, args in cf.dockerfile_instructions(cf.REPO / dockerfile):
        if keyword not in ("COPY", "ADD") or "--from=" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        missing += [src for src in parts[:-1] if not (cf.REPO / src).exists()]
    assert missing == [], f"{dockerfile} copies what the repository does not hold: {missing}"


def _module_path(module: str) -> Path | None:
    base = cf.REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def _problems_of_argv(argv: list[str]) -> list[str]:
    """What in a firstmile container's command does not exist in the repository (or the project's venv)."""
    problems = []
    program = argv[0]
    if program == "python":
        if argv[1] == "-m":
            module = argv[2]
            path = _module_path(module)
            if path is None:
                problems.append(f"module {module} (python -m) not in the repository")
            elif path.name == "__init__.py":
                problems.append(f"package {module} has no __main__.py")
            elif path.name != "__main__.py" and "__main__" not in path.read_text():
                problems.append(f"{module} has no `if __name__ == '__main__'` block")
        elif argv[1] == "-c":
            tree = ast.parse(argv[2])
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    path = _module_path(node.module)
                    if path is None:
                        problems.append(f"module {node.module} (python -c) not in the repository")
                        continue
                    problems += [f"{node.module} defines no {a.name}" for a in node.names
                                 if not _defines(path, a.name)]
        elif argv[1] == "/app/healthcheck.py":
            problems += [] if (cf.REPO / "docker" / "healthcheck.py").is_file() else ["docker/healthcheck.py"]
        else:
            problems.append(f"unexpected python invocation {argv[:3]}")
    elif program in ("dagster-webserver", "dagster-daemon") and "-m" in argv:
        module = argv[argv.index("-m") + 1]
        path = _module_path(module)
        if path is None:
            problems.append(f"Dagster code location {module} not in the repository")
        elif not _defines(path, "defs"):
            problems.append(f"{module} does not define `defs`")
    # Console scripts the platform image installs from pyproject's [platform] extra: present in the project's venv.
    if program not in ("python",) and shutil.which(program, path=str(Path(sys.executable).parent)) is None:
        problems.append(f"{program} is not a console script of the project's environment")
    return problems


def test_every_firstmile_service_command_and_healthcheck_runs_code_that_exists(compose: dict[str, Any]) -> None:
    problems = []
    for name, service in _firstmile_services(compose).items():
        argv = cf.command_argv(service.get("command"))
        assert argv, f"{name}: give the command explicitly (the image CMD serves one service only)"
        problems += [f"{name}: {p}" for p in _problems_of_argv(argv)]
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[0] == "CMD":
            problems += [f"{name} healthcheck: {p}" for p in _problems_of_argv(test[1:])]
    assert problems == []


@pytest.mark.parametrize("dockerfile", sorted(FIRSTMILE_DOCKERFILES))
def test_dockerfile_default_command_and_healthcheck_run_code_that_exists(dockerfile: str) -> None:
    path = cf.REPO / dockerfile
    problems = _problems_of_argv(cf.final_cmd(path))
    for keyword, args in cf.dockerfile_instructions(path):
        if keyword == "HEALTHCHECK":
            problems += _problems_of_argv(cf.exec_form(args.split(" CMD ", 1)[1]) or ["<not exec form>"])
    assert problems == []


def test_worker_service_runs_the_worker_image_default_command(compose: dict[str, Any]) -> None:
    assert cf.command_argv(compose["services"]["worker"]["command"]) == cf.final_cmd(
        cf.REPO / "docker" / "worker.Dockerfile")


def test_workers_scale_in_one_consumer_group_without_fixed_names_or_ports(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker and "volumes" not in worker
    assert worker["environment"]["FIRSTMILE_CONSUMER_GROUP"] == "firstmile-worker"
    assert int(worker["deploy"]["replicas"]) <= int(worker["environment"]["FIRSTMILE_PARTITIONS"])


def test_streaming_services_use_the_settings_names_of_streaming_settings(compose: dict[str, Any]) -> None:
    """A typo in a FIRSTMILE_ name would be silently ignored (extra='ignore'): every one must be a real field of a
    settings class, or one of the variables dbt reads (which the platform image's dbt parse needs too)."""
    from orchestration.settings import OrchestrationSettings
    from streaming.collector.config import CollectorSettings
    from streaming.serving.config import ServingSettings
    from tests.deploy.test_env_example import env_names

    known = set(env_names(CollectorSettings).values()) | set(env_names(OrchestrationSettings).values()) \
        | set(env_names(ServingSettings).values())
    dbt_inputs = set(OrchestrationSettings(data_dir=Path("/data"), lake_uri="").dbt_env())
    unknown = set()
    for name, service in _firstmile_services(compose).items():
        for key in service.get("environment") or {}:
            is_setting = key.startswith("FIRSTMILE_") or key == "KAFKA_BROKER_ADDRESS"
            if is_setting and key not in known | dbt_inputs:
                unknown.add(f"{name}.{key}")
    assert unknown == set()


def test_every_dependency_waits_for_a_health_check_or_a_completed_one_shot(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                test = services[dep].get("healthcheck", {}).get("test")
                assert test and not services[dep]["healthcheck"].get("disable"), f"{dep} has no health check"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {dep}: {condition}"
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot: restart must be 'no'"
