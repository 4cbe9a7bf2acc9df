"""Reading the deployment files the way Docker Compose and BuildKit do, without a container engine.

* :func:`interpolate` implements Compose's variable interpolation (``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
  ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, nested defaults).
* :func:`dockerfile_instructions` splits a Dockerfile into (instruction, arguments) with line continuations joined.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
ENV_VARS_TXT = REPO / "docker" / "env-vars.txt"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    pass


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` whose body starts at ``start`` (nested ``${...}`` allowed)."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unclosed ${{ in {text!r}")


def interpolate(text: str, env: Mapping[str, str], used: set[str] | None = None) -> str:
    """Compose's interpolation of one string. Names referenced are added to ``used``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            body = text[i + 2:end]
            match = _NAME.match(body)
            if not match:
                raise InterpolationError(f"invalid reference ${{{body}}}")
            name, rest = match.group(0), body[match.end():]
            if used is not None:
                used.add(name)
            value = env.get(name)
            if rest == "":
                out.append(value or "")
            elif rest.startswith((":-", ":?", ":+")):
                op, arg = rest[:2], rest[2:]
                set_and_non_empty = bool(value)
                if op == ":-":
                    out.append(value if set_and_non_empty else interpolate(arg, env, used))  # type: ignore[arg-type]
                elif op == ":?":
                    if not set_and_non_empty:
                        raise InterpolationError(f"required variable {name} is missing a value: {arg}")
                    out.append(value)  # type: ignore[arg-type]
                else:
                    out.append(interpolate(arg, env, used) if set_and_non_empty else "")
            elif rest[0] in "-?+":
                op, arg = rest[0], rest[1:]
                if op == "-":
                    out.append(value if value is not None else interpolate(arg, env, used))
                elif op == "?":
                    if value is None:
                        raise InterpolationError(f"required variable {name} is unset: {arg}")
                    out.append(value)
                else:
                    out.append(interpolate(arg, env, used) if value is not None else "")
            else:
                raise InterpolationError(f"invalid reference ${{{body}}}")
            i = end + 1
            continue
        match = _NAME.match(text, i + 1)
        if match:
            if used is not None:
                used.add(match.group(0))
            out.append(env.get(match.group(0), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def interpolate_tree(node: Any, env: Mapping[str, str], used: set[str] | None = None) -> Any:
    """Interpolate every string value (not keys, as Compose does) of a loaded YAML document."""
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, used) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, used) for v in node]
    if isinstance(node, str):
        return interpolate(node, env, used)
    return node


def load_raw() -> dict[str, Any]:
    """docker-compose.yml as YAML (merge keys resolved), before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def variables_used(doc: Any | None = None) -> set[str]:
    used: set[str] = set()
    # Interpolating with every variable set to a placeholder visits every branch, required ones included.
    interpolate_tree(doc if doc is not None else load_raw(), _Everything(), used)
    return used


class _Everything(dict):  # type: ignore[type-arg]
    def get(self, key: str, default: Any = None) -> str:  # noqa: ARG002 - dict API
        return "x"


def required_variables(doc: Any | None = None) -> set[str]:
    """Variables the file refuses to start without (``${NAME:?...}`` / ``${NAME?...}``)."""
    text = json.dumps(doc if doc is not None else load_raw())
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text))


def load(env: Mapping[str, str]) -> dict[str, Any]:
    """The effective model: YAML, then interpolation with ``env`` (Compose's order)."""
    return interpolate_tree(load_raw(), env)


def documented_names(path: Path) -> set[str]:
    """Names set in a dotenv-style file (``NAME=value  # comment``; commented-out ``# NAME=`` lines count too)."""
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"\s*(?:#\s*)?(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def command_argv(command: Any) -> list[str]:
    """A service's ``command`` as argv (a string is split like Compose does, shell-style)."""
    if command is None:
        return []
    return list(command) if isinstance(command, list) else shlex.split(command)


# ---- Dockerfiles -------------------------------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw_line in path.read_text().splitlines():
        line = raw_line.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD, else None."""
    try:
        value = json.loads(args)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def final_cmd(path: Path) -> list[str]:
    cmds = [exec_form(args) for keyword, args in dockerfile_instructions(path) if keyword == "CMD"]
    if not cmds or cmds[-1] is None:
        raise AssertionError(f"{path.name}: the last CMD must be in exec form")
    return cmds[-1]
