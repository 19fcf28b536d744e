"""Issue 9: no literal secret and no known default secret anywhere in the repository.

detect-secrets (Yelp) scans every tracked file. A finding is allowed only if it is in the reviewed baseline
`.secrets.baseline` (test keys made for this repo, like tests/helpers.py's SECRET, and false positives such as variable
names); everything else fails with file, line and kind. Rendered Ansible templates and Pulumi mock outputs
are checked by tests/roles and tests/infra."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = (
    ".secrets.baseline"  # reviewed findings: test keys made for the tests and false positives (see docs/security.md)
)

# Default credentials that shipped self-hosted stacks are known for (compose files, docs), and the seed's placeholder.
KNOWN_DEFAULTS = [
    "YOUR_APP_SECRET",
    "YOUR_APP_ID",
    "changeme",
    "change-me",
    "foobared",  # redis.conf's example requirepass
    "admin:admin",
    "weaviate-api-key",
    "sk-xxxxxxxx",
    "difyai123456",
    "password123",
]
# Where a known default may be written on purpose: docs that warn about them, the placeholder check, and this test.
MAY_NAME_DEFAULTS = re.compile(
    r"^(docs/|README\.md$|tests/|service/ai_assistant/settings\.py$|config/sensitive_words\.txt$|shared/)"
)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file() and f != BASELINE]  # its hashes look like secrets


def test_detect_secrets_finds_nothing_unreviewed() -> None:
    pytest.importorskip("detect_secrets", reason="detect-secrets is installed by scripts/bootstrap (dev extra)")
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    reviewed = json.loads((ROOT / BASELINE).read_text())["results"]
    known = {(f, item["hashed_secret"], item["type"]) for f, items in reviewed.items() for item in items}
    current = SecretsCollection()
    with default_settings():
        for f in tracked_files():
            current.scan_file(str(ROOT / f))
    findings = sorted(
        f"{rel}:{secret.line_number}: {secret.type}"
        for filename, secret in current
        if (rel := str(Path(filename).relative_to(ROOT)), secret.secret_hash, secret.type) not in known
    )
    assert findings == [], (
        "secret-shaped strings not in the reviewed baseline: remove them, or, for a test-only value, review and run\n"
        "  .venv/bin/detect-secrets scan $(git ls-files) > .secrets.baseline\n" + "\n".join(findings)
    )


def test_no_known_default_secret_outside_docs_and_tests() -> None:
    offenders = []
    for f in tracked_files():
        if MAY_NAME_DEFAULTS.match(f):
            continue
        try:
            text = (ROOT / f).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for default in KNOWN_DEFAULTS:
            for number, line in enumerate(text.splitlines(), start=1):
                if default.lower() in line.lower():
                    offenders.append(f"{f}:{number}: {default}")
    assert offenders == []


def test_the_scan_catches_a_planted_secret(tmp_path: Path) -> None:
    """The scanner is not vacuous: a realistic leaked key in a file is found."""
    pytest.importorskip("detect_secrets", reason="detect-secrets is installed by scripts/bootstrap (dev extra)")
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    leak = tmp_path / "leak.py"
    # Assembled at run time so that this file itself holds no secret-shaped literal.
    token = "xo" + "xb-" + "123456789012-123456789012-" + "abcdefghijABCDEFGHIJabcd"
    leak.write_text(f'slack_bot_token = "{token}"\n')
    collection = SecretsCollection()
    with default_settings():
        collection.scan_file(str(leak))
    assert {s.type for _, s in collection} >= {"Slack Token"}
