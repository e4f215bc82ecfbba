"""The retraining pipeline: drift check -> [drift and the policy agrees] the training pipeline,
inside an exit handler that records how the retrain ended.

The training pipeline runs nested, on the config's window (the new data); its evaluate gate
still decides what reaches production. With ``window_days`` N (a recurring run:
``kfops schedule retraining --window-days N``) the window is the N whole days before the run's
scheduled time instead. ``create_pipeline(config)`` is pure, like training's.
"""


from kfp import dsl

from components.drift.component import drift, link_trigger, retrain_outcome, run_window
from kfops.config import KfopsConfig
from pipelines import training

PIPELINE_NAME = "kfops-retraining"


def create_pipeline(cfg: KfopsConfig):
    """Build the retraining pipeline for ``cfg``; ``cfg.dataset`` is the new window to check and train on."""
    from kfops.adapters.kfp_secrets import use_cluster_secrets

    config_json = cfg.portable().to_json()  # paths as written: no host path of the compiling machine
    image = cfg.cluster.image
    train_on_new_window = training.create_pipeline(cfg, exit_handler=False)  # this pipeline's handler tells its end

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Check drift against the champion's data; on confirmed drift, retrain with kfops-training.",
        # The IR default; KFP uses it unless a run sets its own (kfops submit/schedule send it too).
        pipeline_root=cfg.cluster.pipeline_root,
    )
    def retraining(config: str = config_json, reference_window: str = "", current_source: str = "",
                   check_time: str = "", window_days: int = 0):
        # Runs however the rest ends: a retrain counts toward the cooldown and budget only once its
        # training finished (kfops.core.retrain_policy). KFP allows an exit handler only at the top.
        outcome = retrain_outcome(config=config, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        use_cluster_secrets(outcome.set_caching_options(False).set_container_image(image)
                            .set_display_name("retrain-outcome"), cfg)
        with dsl.ExitHandler(outcome, name="check-and-retrain"):
            # KFP's driver fills the placeholder only as a task input's constant (backend 2.17+).
            window = run_window(config=config, window_days=window_days,
                                schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER)
            window.set_container_image(image).set_display_name("window")
            run_config = window.output
            checked = drift(config=run_config, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                            reference_window=reference_window, current_source=current_source, check_time=check_time)
            use_cluster_secrets(checked.set_caching_options(False).set_container_image(image)
                                .set_display_name("drift"), cfg)
            with dsl.If(checked.outputs["Output"] == True, name="retrain"):  # noqa: E712  a KFP condition
                trained = train_on_new_window(config=run_config).set_display_name("training")
                link = link_trigger(config=run_config, pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                                    decision=checked.outputs["decision"]).after(trained)
                use_cluster_secrets(link.set_caching_options(False).set_container_image(image), cfg)

    return retraining
