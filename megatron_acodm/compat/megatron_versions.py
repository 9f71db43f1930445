"""Which megatron-core releases the project runs on, and what differs between them.

The range is the one the multi-process tests pass on (0.16.1, the last release for Python below
3.12, and 0.19.2); a release outside it is refused before anything is built, in one line. What
the trainer must know about a release lives here: where dist_checkpointing keeps a checkpoint's
common (non-tensor) state.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Optional

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from megatron_acodm.errors import UserError

SUPPORTED = ">=0.16.1,<0.20"  # also pyproject.toml's requirement
# Since 0.19 dist_checkpointing stores a checkpoint's common state as an item "common_state" of the
# torch_dist files; 0.16 to 0.18 write it to common.pt and cannot read the item.
COMMON_STATE_ITEM_SINCE = Version("0.19")


def installed_version() -> Optional[str]:
    """The installed megatron-core's version string, or None when there is none."""
    try:
        return importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:  # a Megatron-LM source tree on the path has no distribution metadata
        return importlib.import_module("megatron.core.package_info").__version__
    except ImportError:
        return None


def _parsed(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion:
        raise UserError(f"megatron-core reports the version {version!r}, which is not a version number; "
                        f"install a release: pip install 'megatron-core{SUPPORTED}'") from None


def check_supported(version: Optional[str] = None) -> Version:
    """The installed (or the given) megatron-core version; a UserError outside SUPPORTED."""
    version = installed_version() if version is None else version
    if version is None:
        raise UserError(f"megatron-core is not installed; install it: pip install 'megatron-core{SUPPORTED}'")
    parsed = _parsed(version)
    # prereleases=True: a 0.19 release candidate is inside the range, 0.20.0rc1 is not (PEP 440).
    if not SpecifierSet(SUPPORTED).contains(parsed, prereleases=True):
        raise UserError(f"megatron-core {version} is installed, this project supports megatron-core{SUPPORTED}; "
                        f"install one: pip install 'megatron-core{SUPPORTED}'")
    return parsed


def reads_common_state_item(version: Optional[str] = None) -> bool:
    """Whether megatron-core (installed, or `version`) reads a checkpoint whose common state is an
    item of its torch_dist files rather than common.pt (the format 0.19 writes)."""
    return check_supported(version) >= COMMON_STATE_ITEM_SINCE
