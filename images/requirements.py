"""Print the pip requirements of one image role, taken from pyproject.toml's dependencies.

Each image installs the project's own version ranges, filtered and renamed for its role by
``[tool.kfops.images.<role>]`` in pyproject.toml, so the ranges are written once. Run from the
repository root (standard library only).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(.*)$")


def role_requirements(pyproject: dict, role: str) -> list[str]:
    """The requirement lines of ``role``: kept names only (all when ``keep`` is absent), renamed."""
    roles = pyproject.get("tool", {}).get("kfops", {}).get("images", {})
    if role not in roles:
        raise SystemExit(f"unknown image role '{role}'; pyproject.toml defines: {', '.join(sorted(roles))}")
    spec = roles[role]
    keep = spec.get("keep")
    drop = set(spec.get("drop", []))
    rename = spec.get("rename", {})
    lines, names = [], set()
    for requirement in pyproject["project"]["dependencies"]:
        match = _NAME.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read requirement '{requirement}'")
        name, extras, rest = match.group(1), match.group(2) or "", match.group(3)
        names.add(name)
        if (keep is not None and name not in keep) or name in drop:
            continue
        lines.append(rename.get(name, name + extras) + rest)
    # The Dockerfiles install kfops itself with --no-build-isolation, so its build backend goes in too.
    lines += pyproject.get("build-system", {}).get("requires", [])
    unknown = (set(keep or []) | drop | set(rename)) - names
    if unknown:
        raise SystemExit(f"image role '{role}' names {', '.join(sorted(unknown))}, which pyproject.toml does not depend on")
    return lines


OUT_DIR = Path("images/requirements")


def rendered(pyproject: dict) -> dict[Path, str]:
    """``images/requirements/<role>.txt`` for every role: what each Dockerfile installs."""
    roles = pyproject.get("tool", {}).get("kfops", {}).get("images", {})
    header = "# Generated from pyproject.toml by `python images/requirements.py --write`; do not edit.\n"
    return {OUT_DIR / f"{role}.txt": header + "\n".join(role_requirements(pyproject, role)) + "\n" for role in roles}


def main(argv: list[str]) -> None:
    """``requirements.py --write``: refresh images/requirements/*.txt (the Dockerfiles copy them, so
    docker's layer cache of the dependencies holds until a requirement changes, not whenever
    pyproject.toml does). ``requirements.py <role> [name]``: print a role's requirements."""
    pyproject = tomllib.loads(Path("pyproject.toml").read_text())
    if argv[1:] == ["--write"]:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for path, text in rendered(pyproject).items():
            path.write_text(text)
            print(f"wrote {path}")
        return
    if len(argv) not in (2, 3):
        raise SystemExit("usage: requirements.py --write | <role> [name] (reads ./pyproject.toml)")
    lines = role_requirements(pyproject, argv[1])
    if len(argv) == 3:
        lines = [line for line in lines if _NAME.match(line).group(1) == argv[2]]
        if not lines:
            raise SystemExit(f"image role '{argv[1]}' installs no '{argv[2]}'")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv)
