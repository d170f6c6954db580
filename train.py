"""Training stages: ``task=diffusion`` (denoiser), ``task=scores`` (minority scores and ordinal
labels), ``task=classifier`` (noise-conditional minority classifier)."""

import hydra
from omegaconf import DictConfig

from minority.cli import prepare_run, run, user_errors_exit


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    prepare_run(cfg)
    from minority.tasks.train import run_training_task  # Lightning after the logging

    run_training_task(cfg)


if __name__ == "__main__":
    run(main)
