#!/usr/bin/env bash
# Static security checks of infra/terraform with checkov, offline.
#
# checkov runs from its own virtualenv (.venv-checkov/, git-ignored): its HCL parser pins a
# python-hcl2 that clashes with the one in the project's dev extra. The venv is created on the
# first run with a single pip install of the pinned version; later runs reuse it.
#
# Usage: scripts/checkov.sh [extra checkov args...]
# Env:   KFOPS_CHECKOV_VENV (venv path), PYTHON (interpreter used to create it).
# Exit:  0 = no failed checks; 1 = failed checks; 3 = the venv could not be created.
set -euo pipefail

CHECKOV_VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KFOPS_CHECKOV_VENV:-$ROOT/.venv-checkov}"
PYTHON="${PYTHON:-python3}"

installed_version() {
  "$VENV/bin/python" -c 'from importlib.metadata import version; print(version("checkov"))' 2>/dev/null || true
}

if [[ "$(installed_version)" != "$CHECKOV_VERSION" ]]; then
  echo "checkov.sh: creating $VENV with checkov==$CHECKOV_VERSION" >&2
  if ! { "$PYTHON" -m venv "$VENV" &&
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"; }; then
    echo "checkov.sh: could not create the checkov virtualenv at $VENV (is PyPI reachable?)" >&2
    exit 3
  fi
fi

cd "$ROOT/infra/terraform"

# Reviewed global skips (each with its reason) -> "ID1,ID2"; an entry without a reason is refused.
SKIP_CHECKS="$("$VENV/bin/python" - checkov-skips.yaml <<'PY'
import sys
import yaml

with open(sys.argv[1]) as handle:
    entries = (yaml.safe_load(handle) or {}).get("skips") or []
unreasoned = [entry.get("id") for entry in entries if not str(entry.get("reason") or "").strip()]
if unreasoned:
    sys.exit(f"checkov-skips.yaml: skips without a reason: {unreasoned}")
print(",".join(entry["id"] for entry in entries))
PY
)"

# --skip-download: no Bridgecrew platform calls and no registry module downloads (offline).
exec "$VENV/bin/checkov" \
  --config-file .checkov.yaml \
  --directory . \
  --skip-download \
  ${SKIP_CHECKS:+--skip-check "$SKIP_CHECKS"} \
  "$@"
