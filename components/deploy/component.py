from kfp import dsl

from kfops.kfp_support import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def deploy(config: str, version: str) -> str:
    """Deploy: serve the `@champion` (or `serving.model_alias`) and smoke-test it.

    Locally it starts, or restarts, a KServe ModelServer process on `serving.host` (127.0.0.1 by
    default) and answers one V2 Open Inference Protocol request.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        version: The version registered by this run (recorded; the alias decides what serves).

    Returns:
        The endpoint URL.
    """
    from kfops.steps import deploy as run

    result = run(config, version)
    print(f"serving {result['model_name']} v{result['version']} (@{result['alias']}) at {result['endpoint']}")
    return result["endpoint"]
