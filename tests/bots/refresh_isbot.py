r"""Refresh the vendored ``isbot`` pattern list (``streaming/ua_isbot.json``) from the npm registry.

``isbot`` (npm, Unlicense) ships its patterns inside its bundle (``index.js``: ``var patterns_default = [...]``,
the same strings as its exported ``list``); this script packs the requested version with ``npm pack``, reads that
array, checks it against ``require("isbot").list`` when ``node`` is on the PATH, and writes the JSON the hot path
loads, with the licence text and the tarball's provenance (version, file name, sha1 and integrity).

Patterns are kept as isbot writes them (JavaScript syntax, flag ``i``). Where Python's ``re`` needs another
spelling for the same language, the entry carries a ``python`` rewrite and the reason: today only variable-width
look-behind alternations ``(?<!A|B)`` (JavaScript accepts them, ``re`` does not), spelled ``(?<!A)(?<!B)``
(equivalent: neither A nor B ends here), and a hyphen after a class escape in a class (``[\w\d-.]``: JavaScript
reads it literally, ``re`` rejects the range), escaped. ``tests/streaming/test_bots_sources.py`` checks every
pattern, compiled into Hyperscan, against ``re`` (``make bench-bots``: on the whole evaluation half).

    .venv/bin/python tests/bots/refresh_isbot.py [--version 5.2.4] [--out streaming/ua_isbot.json]

After a refresh, regenerate the weak-pattern list (``tests/bots/generate_weak_patterns.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "streaming" / "ua_isbot.json"
_ARRAY = re.compile(r"var patterns_default = (\[.*?\n\]);", re.S)
#: ``(?<!A|B)``: a look-behind whose body is an alternation without nested groups.
_LOOKBEHIND_ALTERNATION = re.compile(r"\(\?<([!=])([^()]*\|[^()]*)\)")
#: ``\d-.`` inside a class: JavaScript (without the u flag) takes the hyphen literally, ``re`` rejects the range.
_CLASS_ESCAPE_HYPHEN = re.compile(r"(\\[wdsWDS])-(?!\])")


def python_spelling(pattern: str) -> tuple[str, str | None]:
    """(the pattern as Python ``re`` and Hyperscan accept it, the reasons when it had to be rewritten)."""
    reasons: list[str] = []

    def split(match: re.Match[str]) -> str:
        kind, body = match.group(1), match.group(2)
        if kind == "=":  # (?<=A|B) is not (?<=A)(?<=B); none in isbot today
            raise ValueError(f"positive look-behind alternation in {pattern!r}: rewrite by hand")
        reasons.append("variable-width look-behind alternation (?<!A|B) spelled (?<!A)(?<!B)")
        return "".join(f"(?<!{alt})" for alt in body.split("|"))

    def hyphen(match: re.Match[str]) -> str:
        reasons.append(f"'{match.group(0)}' in a class (JavaScript reads the hyphen literally after a class escape) "
                       "spelled with the hyphen escaped")
        return match.group(1) + "\\-"

    rewritten = _LOOKBEHIND_ALTERNATION.sub(split, pattern)
    rewritten = _CLASS_ESCAPE_HYPHEN.sub(hyphen, rewritten)
    re.compile(rewritten, re.IGNORECASE | re.ASCII)  # raises: a construct this script does not know
    return rewritten, "; ".join(reasons) or None


def npm_pack(spec: str, dest: Path) -> dict[str, Any]:
    out = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(dest)], check=True,
                         capture_output=True, text=True).stdout
    info: dict[str, Any] = json.loads(out)[0]
    return info


def node_list(index_js: Path) -> list[str] | None:
    if not shutil.which("node"):
        return None
    out = subprocess.run(["node", "-e", f"process.stdout.write(JSON.stringify(require({str(index_js)!r}).list))"],
                         check=True, capture_output=True, text=True).stdout
    return list(json.loads(out))


def refresh(version: str, out: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="isbot-") as tmp_name:
        tmp = Path(tmp_name)
        info = npm_pack(f"isbot@{version}", tmp)
        with tarfile.open(tmp / info["filename"]) as tar:
            tar.extractall(tmp, filter="data")
        package = tmp / "package"
        index_js = package / "index.js"
        found = _ARRAY.search(index_js.read_text(encoding="utf-8"))
        if not found:
            raise SystemExit("isbot's index.js no longer carries `var patterns_default = [...]`: update this script")
        patterns: list[str] = json.loads(found.group(1))
        exported = node_list(index_js)
        if exported is not None and exported != patterns:
            raise SystemExit("the array read from index.js differs from require('isbot').list")
        meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
        license_text = (package / "LICENSE").read_text(encoding="utf-8")
    entries: list[dict[str, str]] = []
    for pattern in patterns:
        python, reason = python_spelling(pattern)
        entry = {"pattern": pattern}
        if reason:
            entry.update(python=python, rewritten=reason)
        entries.append(entry)
    doc = {
        "source": "isbot",
        "about": "the isbot npm package's pattern list (its exported `list`), matched case-insensitively like "
                 "isbot's RegExp(list.join('|'), 'i'); refreshed by tests/bots/refresh_isbot.py",
        "version": meta["version"],
        "package": f"npm: isbot@{meta['version']} ({info['filename']})",
        "shasum": info.get("shasum"),
        "integrity": info.get("integrity"),
        "checked_against_node_list": exported is not None,
        "license": meta.get("license"),
        "license_text": license_text,
        "flags": "i",
        "patterns": entries,
    }
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="latest", help="an isbot version or dist-tag (default: latest)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    doc = refresh(args.version, args.out)
    rewritten = sum(1 for e in doc["patterns"] if "python" in e)
    print(f"isbot {doc['version']} ({doc['license']}): {len(doc['patterns'])} patterns, {rewritten} rewritten for "
          f"Python re -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
