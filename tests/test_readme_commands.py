"""Every command in README.md's ```bash blocks that runs train.py, eval.py, bench.py or export.py is valid as written:
Hydra overrides (sweeps expanded) compose against conf/ and resolve, and train.py's pass the engine's config checks
for the launch's world size; bench.py's and export.py's key=value arguments pass their own parsers. So the guide
cannot drift from the configs."""
from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from mobilemamba.benchmark import expand, resolve_name
from mobilemamba.engine.config import validate_train_config
from mobilemamba.export.cli import parse_args as parse_export_args

ROOT = Path(__file__).resolve().parents[1]
HYDRA_CONFIGS = {"train.py": "config", "eval.py": "eval"}
ENTRY_POINTS = (*HYDRA_CONFIGS, "bench.py", "export.py")


@dataclass(frozen=True)
class Command:
    line: str
    script: str
    args: tuple[str, ...]
    world_size: int

    def __str__(self) -> str:
        return self.line[:90]


def _world_size(launcher: list[str]) -> int:
    """Processes a torchrun launch starts (1 without torchrun): --nnodes x --nproc_per_node."""
    flags = dict(re.match(r"--([\w-]+)=(\S+)", tok).groups() for tok in launcher if re.match(r"--[\w-]+=", tok))
    return int(flags.get("nnodes", 1)) * int(flags.get("nproc_per_node", 1))


def commands_in(markdown: str) -> list[Command]:
    """The entry-point commands of the ```bash blocks (line continuations joined, comments dropped)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            tokens = shlex.split(line, comments=True)
            at = next((i for i, tok in enumerate(tokens) if Path(tok).name in ENTRY_POINTS), None)
            if at is not None:
                script = Path(tokens[at]).name
                found.append(Command(shlex.join(tokens), script, tuple(tokens[at + 1:]), _world_size(tokens[:at])))
    return found


def _hydra_runs(args: tuple[str, ...]) -> list[list[str]]:
    """The override lists of the jobs a Hydra command line starts (a -m sweep: one per combination)."""
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(job) for job in itertools.product(*choices)]


def _compose_and_resolve(config_name: str, overrides: list[str]):
    """The job's config as Hydra gives it to the entry point, every interpolation resolved."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(cfg.hydra.run.dir)  # what Hydra sets when it starts the job
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    HydraConfig.instance().set_config(cfg)
    try:
        OmegaConf.to_container(job, resolve=True)
    finally:
        HydraConfig.instance().cfg = None
    return job


def check(command: Command) -> None:
    """Raises when the command's arguments would be refused (an unknown key, a bad value, an unresolvable value)."""
    shell_variables = [a for a in command.args if "$" in a]
    assert not shell_variables, f"arguments must be literal in the guide, got {shell_variables}"
    if command.script in HYDRA_CONFIGS:
        for overrides in _hydra_runs(command.args):
            cfg = _compose_and_resolve(HYDRA_CONFIGS[command.script], overrides)
            if command.script == "train.py":
                validate_train_config(cfg, world_size=command.world_size, check_paths=False)
    elif command.script == "bench.py":
        options = dict(arg.split("=", 1) for arg in command.args)
        options.pop("out", None)
        for cfg in expand(options):
            resolve_name(cfg.model)
    else:
        parse_export_args(list(command.args))


README_COMMANDS = commands_in((ROOT / "README.md").read_text())


def test_the_readme_shows_every_entry_point():
    assert {c.script for c in README_COMMANDS} == set(ENTRY_POINTS)


@pytest.mark.parametrize("command", README_COMMANDS, ids=str)
def test_readme_command_is_valid(command):
    check(command)


@pytest.mark.parametrize("line", [
    "python train.py experiment=smoke trainer.epoch=3",                        # a misspelled key
    "python train.py -m experiment=mobilemamba_s6,mobilemamba_x9",              # one sweep value that does not exist
    "torchrun --nproc_per_node=3 train.py experiment=mobilemamba_s6 trainer.global_batch=1024",  # 1024 % 3
    "python train.py experiment=mobilemamba_$v",                                # a shell variable
    "python eval.py model=s6 checkpoint=x.ckpt trainer.amp=bf16",              # eval.py has no trainer group
    "python bench.py model=s6 mode=train cuda_graph=true",                      # cuda_graph is for inference
    "python bench.py model=s7",                                                 # unknown model
    "python export.py model=s6 format=onnx opset=eighteen",                     # not an integer
])
def test_a_command_that_would_fail_is_caught(line):
    (command,) = commands_in(f"```bash\n{line}\n```")
    with pytest.raises(Exception):
        check(command)


def test_continuations_comments_and_launchers_are_read_as_the_shell_does():
    markdown = ("```bash\nCIFAR10_ROOT=/d torchrun --nnodes=2 --nproc_per_node=4 --rdzv_endpoint=$HEAD:29500 \\\n"
                "    train.py experiment=smoke   # comment: model=nothing\n```\n```python\npython train.py x\n```")
    (command,) = commands_in(markdown)
    assert (command.script, command.args, command.world_size) == ("train.py", ("experiment=smoke",), 8)


def test_every_link_to_the_results_report_names_one_of_its_rows():
    """README, docs, code comments and configs cite measurements as docs/results.md#<id>: each id must exist."""
    report = (ROOT / "docs" / "results.md").read_text()
    headings = re.findall(r"^#+ (.+)$", report, re.M)  # GitHub's heading anchors: lower case, spaces as '-'
    ids = set(re.findall(r'<a id="([\w-]+)"></a>', report)) | {re.sub(r"[^\w -]", "", h).lower().replace(" ", "-")
                                                                for h in headings}
    cited = {anchor: "docs/results.md" for anchor in re.findall(r"\]\(#([\w-]+)\)", report)}
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py"),
                 *(ROOT / "conf").rglob("*.yaml"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.*")]:
        for anchor in re.findall(r"results\.md#([\w-]+)", path.read_text(errors="ignore")):
            cited.setdefault(anchor, path.relative_to(ROOT))
    assert {anchor: where for anchor, where in cited.items() if anchor not in ids} == {}


def test_relative_links_of_the_guide_and_docs_point_at_files_that_exist():
    missing = []
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert missing == []
