"""Pytest plugin (loaded by ``-p harness.collect_root`` in pyproject.toml) for a repository
whose root is itself a ComfyUI package.

The root ``__init__.py`` is the ComfyUI entry point (it imports ComfyUI's API), so pytest must
not import it as a test package (nor a conftest.py beside it, which would import it as its
package): collect the root as a plain directory instead.
"""

from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    if Path(path).resolve() == _ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
