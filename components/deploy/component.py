from kfp import dsl

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def deploy(config: str, version: str) -> str:
    """Deploy: serve the `@champion` (or `serving.model_alias`).

    Locally it starts, or hot-swaps, a KServe ModelServer process on `serving.host` (127.0.0.1 by
    default) and smoke-tests it with one V2 Open Inference Protocol request. On a cluster
    (`serving.target`) it applies a KServe InferenceService; a new version goes out as a canary
    and is promoted only if its error rate and latency stay within `serving.canary`, else rolled
    back, and the step fails.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        version: The version registered by this run (recorded; the alias decides what serves).

    Returns:
        The endpoint URL.
    """
    from kfops.steps.deploy import deploy as run

    result = run(config, version)
    print(f"serving {result['model_name']} v{result['version']} (@{result['alias']}) at {result['endpoint']}")
    return result["endpoint"]
