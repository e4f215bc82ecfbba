"""The generated reference docs match the code they are generated from."""

from __future__ import annotations

import sys

import pytest

from kfops.reports import docgen
from tests.conftest import REPO_ROOT

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.mark.parametrize("path", [docgen.CONFIGURATION_MD, docgen.COMPONENTS_MD], ids=lambda p: p.name)
def test_generated_doc_is_current(path):
    expected = docgen.rendered()[path]
    assert path.exists(), f"{path.relative_to(REPO_ROOT)} is missing: run `python -m kfops.reports.docgen`"
    assert path.read_text() == expected, f"{path.relative_to(REPO_ROOT)} is out of date: run `python -m kfops.reports.docgen`"


def test_every_config_key_is_documented():
    from kfops.config import KfopsConfig

    text = docgen.render_configuration()
    dumped = KfopsConfig().model_dump()

    def keys(tree, prefix=""):
        for name, value in tree.items():
            key = f"{prefix}{name}"
            if isinstance(value, dict) and f"## `{key}`" in text:
                yield from keys(value, key + ".")
            else:
                yield key

    missing = [key for key in keys(dumped) if f"| `{key}` |" not in text]
    assert not missing, f"config keys without a row in configuration.md: {missing}"


def test_every_component_is_documented_with_its_arguments():
    from kfops.adapters.kfp_local import COMPONENTS

    text = docgen.render_components()
    for name in COMPONENTS:
        assert f"## {name}\n" in text
    assert "| `training_set` | input | Dataset artifact |" in text
    assert "| `model` | output | Model artifact |" in text


def test_docstring_args_are_parsed_by_name():
    doc = docgen._split_docstring("Step: does a thing.\n\nArgs:\n    config: The config.\n")
    assert doc["args"] == {"config": "The config."}
    assert doc["summary"] == "Step: does a thing."


def test_no_section_shows_pydantics_own_docstring():
    """A section without a docstring of its own shows none, never the one it inherits from BaseModel."""
    from pydantic import BaseModel

    text = docgen.render_configuration()
    base_doc = " ".join((BaseModel.__doc__ or "").split())
    assert base_doc
    for fragment in (base_doc[:60], "A base class for creating Pydantic models", "__pydantic_"):
        assert fragment not in text, fragment

    class Undocumented(BaseModel):
        value: int = 1

    assert docgen._own_doc(Undocumented) is None


def test_every_kfops_config_section_says_what_it_is_for():
    text = docgen.render_configuration()
    sections = text.split("\n## ")[1:]
    bare = [s.splitlines()[0] for s in sections if s.splitlines()[2].startswith("| Key |")]
    assert not bare, f"config sections without a docstring: {bare}"
