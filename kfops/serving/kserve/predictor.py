"""The KServe adapter: :class:`KfopsModel`, a ``kserve.Model`` over the kfops model format.

KServe's own routes call ``preprocess`` (decode + validate V1 dicts or V2 ``InferRequest``s),
``predict`` (the batched :class:`InferenceEngine`) and ``postprocess`` (V1 dict or V2
``InferResponse``). The server's fast path (:mod:`kfops.serving.kserve.front`) calls the same decode,
engine and encode functions without KServe's per-request pydantic round trips; both give the
same answers. This module imports kserve, so only the server process imports it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kfops.serving.protocol.payloads import (
    OUTPUT_NAMES,
    ParsedRequest,
    decode_v1,
    decode_v2,
    v1_response,
    v2_response,
)
from kfops.serving.runtime.engine import InferenceEngine, Prediction
from kfops.serving.runtime.loading import LoadedModel, ModelSource, load_source

if TYPE_CHECKING:
    from kfops.core.requests import RequestSpec
    from kfops.serving.runtime.lookup import OnlineLookup
    from kfops.serving.runtime.metrics import ServingMetrics

log = logging.getLogger(__name__)


class KfopsModel(kserve.Model):
    """Serves one kfops model folder or registry version under ``name``; hot-swappable."""

    def __init__(
        self,
        name: str,
        source: ModelSource,
        *,
        max_batch_size: int = 256,
        max_latency_ms: float = 2.0,
        lookup: OnlineLookup | None = None,
        inference_log_dir: Path | None = None,
        inference_log_flush_s: float = 10.0,
        predict_threads: int | None = 1,
        metrics: ServingMetrics | None = None,
        loaded: LoadedModel | None = None,
        builder: RequestSpec = None,
        plugins: tuple[str, ...] = (),
        project_dir: Path | None = None,
    ):
        super().__init__(name)
        self.source = source
        self.max_batch_size = max_batch_size
        self.max_latency_ms = max_latency_ms
        self.lookup = lookup
        self.builder = builder
        self.inference_log_dir = inference_log_dir
        self.inference_log_flush_s = inference_log_flush_s
        self.predict_threads = predict_threads
        # The plug-in trainers whose models this server may load (train.plugins), and where they lie.
        self.loader = functools.partial(load_source, predict_threads=predict_threads, plugins=plugins,
                                        project_dir=project_dir)
        self.metrics = metrics
        self.inference: InferenceEngine | None = None
        self._preloaded = loaded
        self._reload_lock: asyncio.Lock | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def load(self) -> bool:
        loaded = self._preloaded or self.loader(self.source)
        self._preloaded = None
        writer = None
        if self.inference_log_dir is not None:
            from kfops.serving.runtime.inference_log import InferenceLogWriter

            writer = InferenceLogWriter(
                self.inference_log_dir, flush_interval_s=self.inference_log_flush_s,
                on_written=self.metrics.log_rows.inc if self.metrics else None,
                on_dropped=self.metrics.log_dropped.inc if self.metrics else None,
            ).start()
        self.inference = InferenceEngine(
            self.name, loaded, max_batch_size=self.max_batch_size, max_latency_s=self.max_latency_ms / 1000,
            lookup=self.lookup, builder=self.builder, log_writer=writer, metrics=self.metrics,
        )
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Flush the inference log; called by KServe on unload and by the server on shutdown."""
        self.ready = False
        if self.inference is not None:
            self.inference.close()

    @property
    def version(self) -> str:
        return self.inference.current.version

    async def reload(self, source: ModelSource | None = None) -> dict[str, Any]:
        """Load ``source`` (default: the current one, e.g. an alias that moved) and swap it in.

        Loading runs in a thread while requests keep being served by the old version; the swap
        is one assignment, so no request is dropped or sees a half-loaded model.
        """
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            source = source or self.source
            loop = asyncio.get_running_loop()
            loaded = await loop.run_in_executor(None, self.loader, source)
            previous = self.inference.swap(loaded)
            self.source = source
        log.info("model %s: swapped version %s -> %s (%s)", self.name, previous.version, loaded.version,
                 source.describe())
        return {"name": self.name, "previous_version": previous.version, "version": loaded.version,
                "source": source.to_dict()}

    # -- KServe data plane ----------------------------------------------------------------------

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess already validated it against the model's spec

    async def preprocess(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> ParsedRequest:
        spec = self.inference.current.spec
        if isinstance(payload, InferRequest):
            body: dict[str, Any] = {"inputs": [
                {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                 "data": tensor.data.tolist() if hasattr(tensor.data, "tolist") else tensor.data}
                for tensor in payload.inputs
            ]}
            if payload.id is not None:
                body["id"] = payload.id
            if payload.request_outputs:
                body["outputs"] = [{"name": out.name} for out in payload.request_outputs]
            parsed = decode_v2(body, spec, self.inference.raw_source(spec))
        else:
            parsed = decode_v1(payload, spec, self.inference.raw_source(spec))
        parsed.request_id = parsed.request_id or (headers or {}).get("x-request-id") or uuid.uuid4().hex
        return parsed

    async def predict(
        self, payload: ParsedRequest, headers: dict[str, str] | None = None, response_headers: dict | None = None
    ) -> tuple[ParsedRequest, Prediction]:
        return payload, await self.inference.infer(payload, payload.request_id)

    async def postprocess(
        self, result: tuple[ParsedRequest, Prediction], headers: dict[str, str] | None = None,
        response_headers: dict | None = None,
    ) -> dict | InferResponse:
        parsed, prediction = result
        if parsed.protocol == "v1":
            return v1_response(prediction.probabilities, prediction.threshold, self.name, prediction.version)
        body = v2_response(prediction.probabilities, prediction.threshold, self.name, prediction.version,
                           parsed.request_id, parsed.outputs)
        return InferResponse(
            response_id=body["id"], model_name=self.name, model_version=prediction.version,
            infer_outputs=[InferOutput(name=t["name"], shape=t["shape"], datatype=t["datatype"], data=t["data"])
                           for t in body["outputs"]],
        )

    def get_input_types(self) -> list[dict]:
        spec = self.inference.current.spec
        return [{"name": c, "datatype": "BYTES" if c in spec.categorical else "FP64", "shape": [-1]}
                for c in spec.columns]

    def get_output_types(self) -> list[dict]:
        types = {"probability": "FP64", "label": "INT64"}
        return [{"name": n, "datatype": types[n], "shape": [-1]} for n in OUTPUT_NAMES]

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata, with the served version (KServe's own leaves ``versions`` out)."""
        current = self.inference.current
        return {
            "name": self.name,
            "versions": [current.version],
            "platform": f"kfops-{current.model.trainer}",
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": {"source": current.source.describe(), "threshold": current.threshold,
                           "raw_requests": self.inference.has_lookup,
                           "raw_request": self.inference.describe_raw(current.spec)},
        }
