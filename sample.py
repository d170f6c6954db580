"""Draw samples: ancestral DDPM / DDIM, minority guidance, self-guidance, Boost-and-Skip."""

import hydra
from omegaconf import DictConfig

from minority.cli import prepare_run, run, user_errors_exit


@hydra.main(config_path="conf", config_name="sample", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    """Sample (and evaluate); returns ``optimized_metric`` for Hydra's sweepers (e.g. Optuna)."""
    prepare_run(cfg)
    from minority.tasks.sample import chosen_metric, sample_task  # Lightning after the logging

    sample_task(cfg)
    return chosen_metric(cfg)


if __name__ == "__main__":
    run(main)
