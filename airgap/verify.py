"""scripts/verify-bundle: check an unpacked bundle before anything is installed from it (stdlib only: the base role's
preflight runs it with the controller's Ansible interpreter).

Usage: verify-bundle [--fingerprint FPR] [--version V] DIR   (the version defaults to this checkout's)
Exit 0 and one line of summary, or exit 2 and one line naming what is wrong.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from airgap.manifest import BundleError, verify

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verify-bundle")
    parser.add_argument("bundle", type=Path, help="the unpacked bundle directory (tar xf ai-assistant-bundle-*.tar)")
    parser.add_argument("--fingerprint", help="the bundle key's fingerprint, as checked out of band")
    parser.add_argument("--version", help="the version the bundle must be for (default: this checkout's)")
    args = parser.parse_args(argv)
    expected = args.version or tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    try:
        if args.bundle.is_file():
            raise BundleError(f"{args.bundle}: an archive; unpack it first (tar xf {args.bundle.name})")
        if not args.bundle.is_dir():
            raise BundleError(f"{args.bundle}: no such directory")
        done = verify(args.bundle, version=expected, fingerprint=args.fingerprint)
    except BundleError as exc:
        print(f"verify-bundle: {exc}", file=sys.stderr)
        return 2
    signed = f", signed by {done.fingerprint}" if done.fingerprint else " (signature not checked: no --fingerprint)"
    print(f"bundle {args.bundle}: version {done.version} ({done.revision}), {done.files} files intact{signed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
