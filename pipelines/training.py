"""The training pipeline: ingest -> validate -> featurize -> train -> evaluate -> [blessed] register -> deploy.

``create_pipeline(config)`` is a pure function: the same config gives the same compiled YAML,
which runs under ``kfp.local`` or on a Kubeflow cluster unchanged.
"""


from kfp import dsl

from components.deploy.component import deploy
from components.evaluate.component import evaluate
from components.featurize.component import featurize
from components.ingest.component import ingest
from components.register.component import register, training_end
from components.train.component import train
from components.validate.component import validate
from kfops.config import KfopsConfig

PIPELINE_NAME = "kfops-training"


def _prepare_task(task: dsl.PipelineTask, image: str) -> dsl.PipelineTask:
    # Every step reads or writes external state (data window, MLflow, serving): never reuse a cached result.
    return task.set_caching_options(False).set_container_image(image)


def create_pipeline(cfg: KfopsConfig, exit_handler: bool = True):
    """Build the training pipeline for ``cfg``; the config is its default ``config`` parameter.

    Its tasks run inside an exit handler that tells ``notify.webhook_url`` how the run ended.
    ``exit_handler=False`` leaves it out, for the retraining pipeline, which runs this one nested
    (KFP takes an exit handler only at a pipeline's top) and tells the end in its own.
    """
    from kfops.adapters.kfp_secrets import use_cluster_secrets

    cfg.check_required()  # a config that does not say what its dataset is fails here, before any task runs
    config_json = cfg.portable().to_json()  # paths as written: no host path of the compiling machine
    image = cfg.cluster.image

    def _prepare(task: dsl.PipelineTask, image: str) -> dsl.PipelineTask:
        # Credentials come from the cluster's Secret at run time (cluster.secrets_name), never the YAML.
        return use_cluster_secrets(_prepare_task(task, image), cfg)

    def _training_tasks(config: str) -> None:
        ingested = _prepare(ingest(config=config), image).set_display_name("ingest")
        validated = _prepare(validate(config=config, raw_tables=ingested.outputs["raw_tables"]), image)
        features = _prepare(
            featurize(config=config, raw_tables=ingested.outputs["raw_tables"]),
            image,
        ).after(validated)
        trained = _prepare(
            train(config=config, training_set=features.outputs["training_set"], data_hash=ingested.outputs["Output"],
                  pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER),
            image,
        )
        if cfg.cluster.gpus_per_node > 0:
            from kfops.adapters.kfp_gpu import apply_gpu_scheduling

            apply_gpu_scheduling(trained, cfg.cluster)
        evaluated = _prepare(
            evaluate(config=config, training_set=features.outputs["training_set"], model=trained.outputs["model"],
                     run_id=trained.outputs["Output"]),
            image,
        )
        with dsl.If(evaluated.outputs["Output"] == True, name="blessed"):  # noqa: E712 (KFP condition syntax)
            registered = _prepare(
                register(config=config, run_id=trained.outputs["Output"], verdict=evaluated.outputs["verdict"],
                         validation_summary=validated.outputs["summary"], raw_tables=ingested.outputs["raw_tables"],
                         pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER),
                image,
            )
            _prepare(deploy(config=config, version=registered.output), image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate, featurize, train, evaluate, register and deploy a model with kfops.",
        # The IR default; KFP uses it unless a run sets its own (kfops submit/schedule send it too).
        pipeline_root=cfg.cluster.pipeline_root,
    )
    def training(config: str = config_json):
        if not exit_handler:
            _training_tasks(config)
            return
        end = training_end(config=config, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        use_cluster_secrets(_prepare_task(end, image).set_display_name("training-end"), cfg)
        with dsl.ExitHandler(end, name="train-and-deploy"):
            _training_tasks(config)

    return training

