"""`make setup` and `make test` say what they install, and why, before they install it."""

import shutil
import subprocess

import pytest

from tests.conftest import PROJECT_ROOT


def _make(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *arguments], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_setup_says_what_it_installs():
    planned = _make("--dry-run", "--always-make", "setup").stdout
    assert "installing imgpipe and its dependencies" in planned and "TensorFlow" in planned
    assert "Nothing is installed outside .venv/" in planned


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_test_says_that_it_installs_chromium_and_how_to_skip_it():
    planned = _make("--dry-run", "chromium").stdout
    assert "apt-get" in planned and "as root" in planned and "IMGPIPE_NO_CHROMIUM=1" in planned
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        skipped = _make("chromium", "IMGPIPE_NO_CHROMIUM=1")
        assert skipped.returncode == 0 and "the report's browser test will skip" in skipped.stdout
    assert "IMGPIPE_NO_CHROMIUM=1" in (PROJECT_ROOT / "README.md").read_text()


def test_the_slow_tests_that_make_test_fast_leaves_out_exist_and_make_test_runs_them():
    from tests.conftest import SLOW_TESTS

    missing = [name for name in SLOW_TESTS if not (PROJECT_ROOT / name).exists()]
    assert not missing, f"tests/conftest.py SLOW_TESTS names what is not there (renamed?): {missing}"
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert '-m "not slow"' in makefile.split("test-fast:")[1].split("\n\n")[0]
    assert "not slow" not in makefile.split("\ntest:")[1].split("\n\n")[0]
