"""Draw samples: ancestral DDPM / DDIM, minority guidance, self-guidance, Boost-and-Skip."""

import hydra
from omegaconf import DictConfig

from minority.cli import run, user_errors_exit
from minority.tasks.sample import sample_task


@hydra.main(config_path="conf", config_name="sample", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    sample_task(cfg)


if __name__ == "__main__":
    run(main)
