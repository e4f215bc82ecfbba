"""The vendored upstream CRDs (tests/schemas, see its README) and a manifest check against them."""

from __future__ import annotations

from pathlib import Path

import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
TRAINJOB_CRD = SCHEMAS / "kubeflow-trainer" / "trainer.kubeflow.org_trainjobs.yaml"
TORCH_RUNTIME = SCHEMAS / "kubeflow-trainer" / "runtime_torch_distributed.yaml"
ISVC_CRD = SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml"

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> dict:
    """A safe load; the C loader when PyYAML has it (the InferenceService CRD is 2 MB)."""
    with path.open() as handle:
        return yaml.load(handle, Loader=_SafeLoader)


def openapi_schema(path: Path, version: str) -> dict:
    """The openAPIV3Schema of one served version of the CRD at path (a fresh copy each call)."""
    (served,) = [v for v in load_yaml(path)["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def validate(manifest: dict, schema: dict) -> None:
    """What the API server checks: the schema's types and required fields, and no pruned field."""
    import jsonschema

    jsonschema.Draft4Validator(schema).validate(manifest)
    pruned = pruned_fields(manifest, schema)
    assert not pruned, f"the API server would silently drop {pruned}"


def pruned_fields(value, schema: dict, path: str = "") -> list[str]:
    """Fields the API server prunes because the structural schema does not declare them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                found += pruned_fields(item, schema["properties"][key], f"{path}.{key}")
            elif not schema.get("additionalProperties"):
                found.append(f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += pruned_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += pruned_fields(item, schema["items"], f"{path}[{i}]")
    return found
