"""The one field of the package's metadata that pyproject.toml cannot state: the long description.

It is README.md, whose links are relative to the repository (docs/state.md, Dockerfile, #deploying). An index
shows it on a page of its own, where a relative link leads nowhere and no project URL is published to make it
absolute; so each such link becomes its text, a link to a docs/ page naming `capctl docs PAGE`, which shows that
page from the package: `capctl docs` does the same to the pages, with the same code (reconciler/manual.py, loaded
by its path: capctl is not installed while it is built).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
# In a checkout they are symlinks to docs/ and specs/; cloned where symlinks are not made (core.symlinks=false)
# each is a one-line file, and the wheel would be built without the pages and the quickstart specs.
for shipped in ("docs", "quickstart"):
    if not (HERE / "reconciler" / shipped).is_dir():
        sys.exit(f"reconciler/{shipped} is not a directory: it is a symlink in git; clone with symlinks to build")
loaded = importlib.util.spec_from_file_location("capctl_manual", HERE / "reconciler" / "manual.py")
assert loaded is not None and loaded.loader is not None
manual = sys.modules[loaded.name] = importlib.util.module_from_spec(loaded)  # its dataclass looks itself up there
loaded.loader.exec_module(manual)

setup(
    long_description=manual.plain_links((HERE / "README.md").read_text(encoding="utf-8")),
    long_description_content_type="text/markdown",
)
