"""Train MobileMamba: `python train.py experiment=mobilemamba_s6 data.root=/path/to/imagenet`.

Multi-GPU: `torchrun --nproc_per_node=8 train.py experiment=...` (all ranks share outputs/<name>/).
Rerunning the same command resumes from outputs/<name>/last.ckpt. Exit code 75 = preempted, 130 = Ctrl-C (both after
writing last.ckpt): rerun to resume.
"""
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mobilemamba.engine import cli, run_training


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_training(cli.checked(cfg), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    cli.run(main)
