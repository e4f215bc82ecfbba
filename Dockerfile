# The pipeline image (cluster.image): every component but GPU training runs in it.
# Classic-builder syntax only (no BuildKit mounts), so any Docker engine builds it.
#   docker build -t kfops:dev .                     # python:3.11-slim and PyTorch's CPU index
#   kfops build --base-image kfops-base:bookworm    # a Debian-made base, see docs/deployment.md
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Empty: torch comes from the index pip is configured with (a local CPU wheel, say).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Build-time pip settings only (images/pip/README.md); this stage is not part of the image.
COPY images/pip/ /etc/kfops-pip/
RUN touch /etc/kfops-pip/pip.conf && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_CONFIG_FILE=/etc/kfops-pip/pip.conf
# pyproject.toml's ranges for this role (images/requirements.py --write): copied by content, so the
# dependency layers stay cached until a requirement changes.
COPY images/requirements/pipeline.txt /tmp/requirements.txt
# Dependencies before the code, so a code change rebuilds one small layer.
RUN if [ -n "$TORCH_INDEX" ]; then pip install --index-url "$TORCH_INDEX" "$(grep '^torch' /tmp/requirements.txt)"; fi \
 && pip install -r /tmp/requirements.txt

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# libgomp for xgboost and torch: Debian-made bases carry it, python:3.11-slim does not.
RUN if ! ldconfig -p | grep -q libgomp.so.1; then \
      apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; fi \
 && useradd --uid 1000 --user-group --home-dir /home/kfops --create-home kfops
COPY --from=build /opt/venv /opt/venv
# The package last, in its own small layers: a code change rebuilds only these.
COPY pyproject.toml README.md /tmp/kfops-src/
COPY kfops /tmp/kfops-src/kfops
# Bytecode stays: the venv is read-only to the user, so without it every start would compile every import.
RUN pip install --quiet --no-deps --no-build-isolation /tmp/kfops-src && rm -rf /tmp/kfops-src
# The project files a step reads: read-only to the user; state goes to $TMPDIR (KfopsConfig.resolve_at_run_time).
WORKDIR /opt/kfops
COPY kfops.yaml ./
COPY expectations ./expectations
COPY feature_repo ./feature_repo
COPY pipelines ./pipelines
COPY components ./components
USER 1000:1000
ENTRYPOINT []
CMD ["kfops", "--help"]
