"""checkov over infra/terraform (scripts/checkov.sh: pinned checkov in .venv-checkov, offline).

Zero failed checks; the only skips are the reviewed ones in checkov-skips.yaml and inline
`#checkov:skip=ID:reason` comments, each with a reason.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT, need
from tests.infra.terraform_tree import TERRAFORM_ROOT

pytestmark = pytest.mark.infra

SCRIPT = REPO_ROOT / "scripts" / "checkov.sh"
SKIPS_FILE = TERRAFORM_ROOT / "checkov-skips.yaml"
VENV_UNAVAILABLE = 3  # scripts/checkov.sh: the checkov virtualenv could not be created
INLINE_SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")
MIN_REASON_WORDS = 6


def test_checkov_finds_no_failed_checks():
    done = subprocess.run(
        ["bash", str(SCRIPT), "--output", "json"], capture_output=True, text=True, check=False, cwd=REPO_ROOT
    )
    need(done.returncode != VENV_UNAVAILABLE, f"checkov virtualenv could not be created: {done.stderr.strip()[-300:]}")
    assert done.returncode in (0, 1), f"checkov did not run:\n{done.stderr[-2000:]}"
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {report["check_type"]: report for report in reports}
    assert "terraform" in by_type, f"checkov scanned no Terraform: {list(by_type)}"
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    summary = by_type["terraform"]["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100, f"suspiciously few checks ran: {summary}"
    assert done.returncode == 0


def test_every_global_skip_has_a_reason():
    entries = yaml.safe_load(SKIPS_FILE.read_text())["skips"]
    assert entries
    for entry in entries:
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", entry["id"]), entry
        assert len(str(entry.get("reason", "")).split()) >= MIN_REASON_WORDS, f"{entry['id']} needs a reviewable reason"
    ids = [entry["id"] for entry in entries]
    assert len(ids) == len(set(ids))


def test_every_inline_skip_has_a_reason():
    found = 0
    for tf_file in TERRAFORM_ROOT.rglob("*.tf"):
        for check_id, reason in INLINE_SKIP.findall(tf_file.read_text()):
            found += 1
            assert len(reason.split()) >= MIN_REASON_WORDS, f"{tf_file}: skip of {check_id} needs a reason"
    assert found, "expected the reviewed inline skips (key policies, access-log bucket, ...)"
