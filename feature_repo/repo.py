"""For the feast CLI only (`feast plan` / `feast apply` in this folder).

kfops never imports this file: it calls ``definitions.build`` with the source folder it wrote.
The feast CLI instead collects Feast objects bound at module level, so they are bound here.
Sources default to ``../.kfops/feast/sources`` (what `kfops features materialize` writes);
set KFOPS_FEAST_SOURCES to use another folder.
"""

import os
from pathlib import Path

from definitions import build

_sources = Path(os.environ.get("KFOPS_FEAST_SOURCES", Path(__file__).resolve().parent.parent / ".kfops/feast/sources"))
for _obj in build(_sources):
    globals()[f"{type(_obj).__name__.lower()}_{_obj.name}"] = _obj
