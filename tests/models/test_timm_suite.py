"""timm's own model tests pass for MobileMamba: `tests/test_models.py` of the installed (pinned) timm's source package,
with `mobilemamba` added to its FEAT_INTER_FILTERS so that the forward_intermediates and pruning contract tests
select our models too.

The source package comes from the registry at test time (`pip download`, cached under $MOBILEMAMBA_CACHE or
.cache), never from this repository. `TIMM_SUITE_MODELS=mobilemamba_t2,mobilemamba_s6,...` widens the run (default:
T2, which keeps the CI suite in its time budget).
"""
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import timm

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MOBILEMAMBA_CACHE", REPO / ".cache")) / "test_deps"
MODELS = os.environ.get("TIMM_SUITE_MODELS", "mobilemamba_t2").split(",")
# the pruning contract test runs ~half the time of all the others together: a run of its own
PARTS = {"prune_contract": ("test_prune_intermediate_layers_contract", 1),
         "the_rest": ("not test_prune_intermediate_layers_contract", 10)}
UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
               "No matching distribution found", "Network is unreachable", "ConnectTimeout")


def source_package(version: str) -> Path:
    """timm's sdist for `version`, downloaded once into the cache; skips the tests only if the registry is
    unreachable."""
    target = CACHE / f"timm-{version}.tar.gz"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                          f"timm=={version}", "-d", str(CACHE)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        if any(marker in out.stdout + out.stderr for marker in UNREACHABLE):
            pytest.skip(f"the package registry is unreachable, timm=={version}'s source package could not be "
                        f"downloaded: {(out.stderr.strip().splitlines() or [''])[-1]}")
        raise AssertionError(f"pip download timm=={version} failed:\n{out.stderr[-2000:]}")
    return target


@pytest.fixture(scope="module")
def timm_tests(tmp_path_factory) -> Path:
    """A folder with timm's test_models.py (FEAT_INTER_FILTERS + 'mobilemamba') and a conftest registering ours."""
    version = timm.__version__
    folder = tmp_path_factory.mktemp("timm_tests")
    with tarfile.open(source_package(version)) as sdist:
        text = sdist.extractfile(f"timm-{version}/tests/test_models.py").read().decode()
    text, found = re.subn(r"^FEAT_INTER_FILTERS = \[", "FEAT_INTER_FILTERS = ['mobilemamba', ", text, flags=re.M)
    assert found == 1, "timm's test_models.py has no FEAT_INTER_FILTERS list to extend"
    (folder / "test_models.py").write_text(text)
    (folder / "conftest.py").write_text("import mobilemamba  # noqa: F401 (registers the models with timm)\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("part", list(PARTS))
@pytest.mark.parametrize("model", MODELS)
def test_timms_model_tests_pass(timm_tests, model, part):
    selection, expected = PARTS[part]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    # -p no:timeout: timm's per-test limits are sized for its CI machines; the subprocess timeout bounds this run
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:timeout",
                          "-W", "ignore::pytest.PytestUnknownMarkWarning", "test_models.py",
                          "-k", f"{model} and {selection}"], cwd=timm_tests, env=env, capture_output=True,
                         text=True, timeout=570)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(rf"\b{expected} passed\b", summary) and "skipped" not in summary, summary
