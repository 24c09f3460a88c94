"""What train.py and eval.py share around Hydra: a config the user got wrong is one line `error: ...` on stderr
and exit code 2, whether Hydra finds it while composing (an unknown experiment, a misspelled key, an override it
cannot parse, a run directory it cannot create) or the job does (a key no config file defines, a bad value: the
engine ends the process itself, so Hydra's job report never shows).

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def main(cfg):
        run_training(cli.checked(cfg), HydraConfig.get().runtime.output_dir)

    if __name__ == "__main__":
        cli.run(main)

HYDRA_FULL_ERROR=1 keeps Hydra's own report with the full traceback.
"""
from __future__ import annotations

import os
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from . import EXIT_BAD_INPUT, error_exit
from .config import ConfigError, check_known_keys, known_keys, no_such_key, unknown_keys

_job_started = False


def checked(cfg: DictConfig) -> DictConfig:
    """The job's config once every key in it is one the config files define (else: one line, exit 2)."""
    global _job_started
    _job_started = True
    hydra = HydraConfig.get()
    conf_dirs = [source.path for source in hydra.runtime.config_sources if source.schema == "file"]
    groups = [group for group in hydra.runtime.choices if "/" not in group]
    try:
        check_known_keys(cfg, known_keys(conf_dirs, hydra.job.config_name, groups))
    except ConfigError as exc:  # ended here: an exception would pass through Hydra's job report first
        error_exit("config", exc, EXIT_BAD_INPUT)
    return cfg


def command_line_keys() -> set[str]:
    """The keys the command line names (`model.img_size` of `model.img_size=64`; group choices such as `model`)."""
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return {o.key_or_group for o in overrides if not o.is_hydra_override()}


def run(main: Callable[[], None]) -> None:
    """Call a `hydra.main` function, turning a config error into one line and exit code 2."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises the exception instead of printing its own report
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        error_exit("config", ConfigError(one_line(exc)), EXIT_BAD_INPUT)
    except OSError as exc:
        if _job_started:
            raise
        where = exc.filename or "the run directory"
        error_exit("config", ConfigError(f"hydra.run.dir: cannot create {where}: {exc.strerror or exc}; choose "
                                         f"a writable one with hydra.run.dir=PATH"), EXIT_BAD_INPUT)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


def one_line(exc: BaseException) -> str:
    """What the user has to change, in one line (Hydra's messages span many, and suggest `+key=` for a typo)."""
    cause = exc.__cause__
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"{group}={name}: no such config in conf/{group}/; one of {', '.join(exc.options)}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        parent = cause.parent_node if isinstance(getattr(cause, "parent_node", None), DictConfig) else {}
        prefix = cause.full_key[: -len(str(cause.key))]  # 'trainer.' of 'trainer.epoch'
        return no_such_key(*unknown_keys({str(cause.key): None}, dict.fromkeys(map(str, parent)), prefix)[0])
    if isinstance(exc, OverrideParseException):
        return f"cannot read the override {exc.override!r}: {exc.message.splitlines()[0]}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
