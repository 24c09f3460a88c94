"""Importing the package does not pay for wandb (timm imports it eagerly; 20-50 s of CPU) until wandb is used."""
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, check=True)
    return out.stdout.split()


def test_a_deferred_module_loads_on_first_use_and_then_replaces_its_stand_in():
    assert _python("""
        import sys
        from mobilemamba._lazy import defer_import
        defer_import("tabnanny")  # a small stdlib module nothing here imports
        import tabnanny
        print(type(sys.modules["tabnanny"]).__name__, tabnanny.__file__ is not None)
        print(issubclass(tabnanny.NannyNag, Exception), type(sys.modules["tabnanny"]).__name__)
        defer_import("not_an_installed_module"); print("not_an_installed_module" in sys.modules)
    """) == ["_Deferred", "True", "True", "module", "False"]


def test_importing_mobilemamba_leaves_wandb_unloaded_or_respects_a_block():
    """train.py blocks wandb (None) when logging to it is off; otherwise it stays a stand-in until used."""
    assert _python("""
        import sys
        import mobilemamba
        print("wandb.sdk" in sys.modules)
        sys.modules.pop("wandb", None); sys.modules["wandb"] = None
        from mobilemamba._lazy import defer_import
        defer_import("wandb"); print(sys.modules["wandb"])
    """) == ["False", "None"]
