"""Build and sign the example plugin: `make plugin-example` (or `.venv/bin/python examples/plugins/build.py`).

The signing key is generated on first use under build/plugins/ (git-ignored) and never committed; the public key line to
paste into `config/plugins.yaml` is written next to it and printed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from ai_assistant.plugins.archive import build
from ai_assistant.plugins.errors import PluginError
from ai_assistant.plugins.signing import generate_key, load_private_key, public_key_text

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=HERE.parents[1] / "build" / "plugins")
    parser.add_argument("--key", type=Path, help="signing key (default: OUT_DIR/example-signing.key, made if missing)")
    args = parser.parse_args(argv)
    out_dir: Path = args.out_dir
    key_path: Path = args.key or out_dir / "example-signing.key"
    try:
        if not key_path.exists():
            generate_key(key_path)
        private = load_private_key(key_path)
        public = public_key_text(private)
        (out_dir / "example-signing.pub").write_text(public + "\n")
        manifest, _ = build(HERE / "im-connector", out_dir / "im-connector.zip", private)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    archive = out_dir / "im-connector.zip"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    print(f"built {archive} ({manifest.name} {manifest.version}) sha256 {digest}")
    print("trust it with, in config/plugins.yaml:")
    print(f'  trusted_keys:\n    - name: example\n      public_key: "{public}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
