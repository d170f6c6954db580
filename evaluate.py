"""Evaluate a sample run (or any guided-diffusion .npz): the metric suite and ground truth."""

import hydra
from omegaconf import DictConfig

from minority.cli import prepare_run, run, user_errors_exit


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    prepare_run(cfg)
    from minority.tasks.evaluate import evaluate_task  # Lightning after the logging

    evaluate_task(cfg)


if __name__ == "__main__":
    run(main)
