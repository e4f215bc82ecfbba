"""Read the Terraform tree under infra/terraform with python-hcl2 for offline contract tests.

python-hcl2 keeps the quotes of string literals and block labels ('"x"') and marks blocks with
``__is_block__``; :func:`clean` strips both so tests compare plain values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT

TERRAFORM_ROOT = REPO_ROOT / "infra" / "terraform"
PLATFORM_ROOT = TERRAFORM_ROOT / "envs" / "aws-dev" / "platform"
INFRA_ROOT = TERRAFORM_ROOT / "envs" / "aws-dev" / "infra"
MODULE_META_ARGUMENTS = {"source", "version", "providers", "depends_on", "count", "for_each"}


def clean(value: Any) -> Any:
    if isinstance(value, dict):
        # python-hcl2 adds __is_block__ and __comments__ markers; they are not Terraform keys.
        return {clean(key): clean(item) for key, item in value.items() if not str(key).startswith("__")}
    if isinstance(value, list):
        return [clean(item) for item in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def strip_comments(text: str) -> str:
    """Drop `#` and `//` comments, keeping `#` inside string literals."""
    kept = []
    for line in text.splitlines():
        in_string = False
        cut = len(line)
        for index, char in enumerate(line):
            if char == '"' and (index == 0 or line[index - 1] != "\\"):
                in_string = not in_string
            elif not in_string and (char == "#" or line.startswith("//", index)):
                cut = index
                break
        kept.append(line[:cut])
    return "\n".join(kept)


@dataclass
class TerraformDir:
    """One Terraform module or root: its blocks by type, merged over its .tf files."""

    path: Path
    blocks: dict[str, list[dict]] = field(default_factory=dict)
    text: str = ""

    def _named(self, kind: str) -> dict[str, dict]:
        return {name: body for block in self.blocks.get(kind, []) for name, body in block.items()}

    @property
    def variables(self) -> dict[str, dict]:
        return self._named("variable")

    @property
    def outputs(self) -> dict[str, dict]:
        return self._named("output")

    @property
    def module_calls(self) -> dict[str, dict]:
        return self._named("module")

    @property
    def locals(self) -> set[str]:
        return {name for block in self.blocks.get("locals", []) for name in block}

    def typed(self, kind: str) -> dict[tuple[str, str], dict]:
        """Resources or data sources keyed by (type, name)."""
        found = {}
        for block in self.blocks.get(kind, []):
            for type_name, named in block.items():
                for name, body in named.items():
                    found[(type_name, name)] = body
        return found

    def terraform_blocks(self) -> list[dict]:
        return self.blocks.get("terraform", [])

    def variable_default(self, reference: str) -> Any:
        """The default of ``${var.name}`` (or a plain value unchanged)."""
        match = re.fullmatch(r"\$\{var\.(\w+)\}", str(reference))
        if not match:
            return reference
        spec = self.variables[match.group(1)]
        assert "default" in spec, f"{self.path}: var.{match.group(1)} has no default to resolve"
        return spec["default"]


@cache
def load_dir(path: Path) -> TerraformDir:
    import hcl2

    tf_dir = TerraformDir(path=path)
    texts = []
    for tf_file in sorted(path.glob("*.tf")):
        text = tf_file.read_text()
        texts.append(text)
        with tf_file.open() as handle:
            parsed = clean(hcl2.load(handle))
        for kind, blocks in parsed.items():
            tf_dir.blocks.setdefault(kind, []).extend(blocks)
    tf_dir.text = strip_comments("\n".join(texts))
    return tf_dir


def terraform_dirs() -> list[Path]:
    """Every folder holding .tf files, outside .terraform caches."""
    return sorted({tf.parent for tf in TERRAFORM_ROOT.rglob("*.tf") if ".terraform" not in tf.parts})


def module_source_dir(caller: Path, source: str) -> Path | None:
    """The folder of a local module source, or None for registry/git sources."""
    if source.startswith(("./", "../")):
        return (caller / source).resolve()
    return None
