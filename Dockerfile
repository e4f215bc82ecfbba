# CPU image: every component except GPU training runs in it (cluster.image).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends git libgomp1 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kfops
# The CPU build of torch keeps the image small; the GPU image installs the CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.13,<2.14"
COPY pyproject.toml README.md ./
COPY kfops ./kfops
COPY components ./components
COPY pipelines ./pipelines
COPY feature_repo ./feature_repo
COPY expectations ./expectations
COPY kfops.yaml ./
RUN pip install .
RUN useradd --create-home --uid 1000 kfops && chown -R kfops /opt/kfops
USER kfops
ENTRYPOINT []
CMD ["kfops", "--help"]
