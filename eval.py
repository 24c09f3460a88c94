"""Evaluate a checkpoint: `python eval.py model=s6 checkpoint=PATH [ema=true] [fuse=true] data=folder data.root=...`.

Accepts this project's checkpoints (dict with model/ema) and published ones (raw state dict, 'net', 'net_E').
The image size and class count are the checkpoint's (the resolution its recorded config names, its head's
classes) unless model.img_size / data.num_classes are given on the command line.
Writes results.json (top1, top5, fused, fused_max_abs_diff, images evaluated, unreadable ones skipped, throughput)
in the output dir.
"""
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mobilemamba.engine import cli, run_eval


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_eval(cli.checked(cfg), HydraConfig.get().runtime.output_dir, cli.command_line_keys())


if __name__ == "__main__":
    cli.run(main)
