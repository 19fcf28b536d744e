"""Seed the incoming colour's virtualenv from the serving colour's (playbooks/deploy.yml, through install.yml).

Usage, on the host, with the interpreter venvs are made with: python3 seed_venv.py SERVING_VENV INCOMING_VENV

A fresh virtualenv would download nothing (the wheels are on the host) but would unpack and byte-compile every
dependency again: 6 to 14 minutes under emulation, most of a deploy. Both colours run the same Python and, unless a
release changes them, the same dependencies, so the incoming venv starts as a hard-linked copy of the serving one and
the role's pip task then installs the new service wheel into it, plus whatever dependency the new wheel requires that
the copy does not satisfy (pip's only-if-needed upgrades). Hard links are safe here: pip and Python's bytecode cache
never write an installed file in place (pip unlinks a file before it writes it, scripts and .pyc files are written
aside and renamed over), so an upgrade in one colour replaces its own link and the other colour keeps the old file.

The paths a venv bakes in are the shebangs of its console scripts, its activate scripts and pyvenv.cfg's `command`;
they are rewritten to the incoming venv in the copy, which takes the incoming venv's name only when complete, so an
interrupted seed leaves no venv half-built (the next run starts it again). A serving venv made by another Python
version is not copied: the role's pip task then builds the incoming venv from scratch.

Prints one JSON line: {"changed": bool, "msg": str}.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def _venv_version(venv: Path) -> str:
    for line in (venv / "pyvenv.cfg").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        # Python 3.11 writes `version`; virtualenv-made venvs write `version_info`.
        if key.strip() in ("version", "version_info"):
            return value.strip()
    return ""


def _rewrite(path: Path, pattern: re.Pattern[str], replacement: str) -> None:
    """Rewrites the venv's path in one file as a new file renamed over the hard link (never in place)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    new = pattern.sub(replacement.replace("\\", "\\\\"), text)
    if new == text:
        return
    fresh = path.with_name(path.name + ".seed-tmp")
    fresh.write_text(new, encoding="utf-8")
    shutil.copymode(path, fresh)
    os.replace(fresh, path)


def seed(serving: Path, incoming: Path) -> tuple[bool, str]:
    if (incoming / "bin/python").exists():
        return False, f"{incoming} exists"
    if not (serving / "bin/python").exists():
        return False, f"{serving} has no python: the incoming venv is built from the wheels"
    version = _venv_version(serving)
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version.split(".")[:2] != ours.split("."):
        return False, f"{serving} runs Python {version or '?'}, not {ours}: the incoming venv is built from the wheels"
    work = incoming.with_name(incoming.name + ".seed")
    shutil.rmtree(work, ignore_errors=True)
    # cp, not shutil.copytree: --link makes hard links and keeps the venv's symlinks (bin/python, lib64) as they are.
    subprocess.run(["cp", "-a", "--link", str(serving), str(work)], check=True)
    # The serving path followed by a separator or the end: /opt/x/venv must not match inside /opt/x/venv-green.
    pattern = re.compile(re.escape(str(serving)) + r"(?=[/\"'\s]|$)", re.MULTILINE)
    for path in [*sorted((work / "bin").iterdir()), work / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            _rewrite(path, pattern, str(incoming))
    # What an earlier, failed `python -m venv` left (no bin/python): the idle colour never ran from it.
    if incoming.exists():
        shutil.rmtree(incoming)
    os.replace(work, incoming)
    return True, f"{incoming} seeded from {serving} (Python {version})"


def main() -> int:
    if len(sys.argv) != 3:
        print(json.dumps({"failed": True, "msg": "usage: seed_venv.py SERVING_VENV INCOMING_VENV"}))
        return 2
    # Not resolve(): the shebangs hold the path as the venv was made, symlinks and all.
    serving, incoming = (Path(os.path.abspath(arg)) for arg in sys.argv[1:3])
    if serving == incoming:
        print(json.dumps({"failed": True, "msg": f"seed_venv.py: serving and incoming venv are both {serving}"}))
        return 2
    changed, msg = seed(serving, incoming)
    print(json.dumps({"changed": changed, "msg": msg}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
