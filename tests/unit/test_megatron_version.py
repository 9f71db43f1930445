"""The megatron-core releases the project accepts: the range, its one-line refusal, the trainer
refusing another release before it starts, and what the checkpoint code learns from the version."""

from __future__ import annotations

import importlib.metadata
import io
import os

import pytest
import torch

from megatron_acodm.compat import megatron_versions
from megatron_acodm.compat.megatron_versions import SUPPORTED, check_supported, reads_common_state_item
from megatron_acodm.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = "install one: pip install 'megatron-core>=0.16.1,<0.20'"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch):
    """`installed(version)`: the megatron-core distribution's metadata reports `version`."""
    real_version = importlib.metadata.version

    def report(version: str) -> None:
        monkeypatch.setattr(importlib.metadata, "version", lambda name: version if name == "megatron-core" else real_version(name))

    return report


@pytest.mark.parametrize("version", ["0.16.1", "0.17.1", "0.18.2", "0.19.0rc1", "0.19.2", "0.19.3"])
def test_releases_inside_the_range_are_accepted(version: str) -> None:
    assert str(check_supported(version)) == version


@pytest.mark.parametrize("version", ["0.15.3", "0.16.0", "0.16.1rc0", "0.20.0rc1", "0.20.0", "1.0.0"])
def test_a_release_outside_the_range_is_one_line_naming_it_and_the_range(version: str) -> None:
    with pytest.raises(UserError) as refused:
        check_supported(version)
    assert str(refused.value) == f"megatron-core {version} is installed, this project supports megatron-core>=0.16.1,<0.20; {FIX}"


def test_a_version_that_is_no_version_number_is_refused() -> None:
    with pytest.raises(UserError) as refused:
        check_supported("main")
    assert str(refused.value) == (
        "megatron-core reports the version 'main', which is not a version number; install a release: "
        "pip install 'megatron-core>=0.16.1,<0.20'"
    )


def test_no_megatron_core_at_all_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(megatron_versions, "installed_version", lambda: None)
    with pytest.raises(UserError) as refused:
        check_supported()
    assert str(refused.value) == "megatron-core is not installed; install it: pip install 'megatron-core>=0.16.1,<0.20'"


def test_the_installed_release_is_the_distributions_version(installed) -> None:
    installed("0.19.2")
    assert megatron_versions.installed_version() == "0.19.2"
    assert str(check_supported()) == "0.19.2"


def test_the_trainer_refuses_another_release_before_it_starts(installed, refused) -> None:
    installed("0.20.1")
    assert refused(["--train-iters", "4"]) == f"error: megatron-core 0.20.1 is installed, this project supports megatron-core>=0.16.1,<0.20; {FIX}"


@pytest.mark.parametrize("version, reads", [("0.16.1", False), ("0.18.2", False), ("0.19.0", True), ("0.19.2", True)])
def test_only_0_19_reads_a_common_state_kept_in_the_tensor_files(version: str, reads: bool) -> None:
    assert reads_common_state_item(version) is reads


def test_pyproject_requires_the_same_range() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as stream:
        dependencies = tomllib.load(stream)["project"]["dependencies"]
    assert [line for line in dependencies if line.startswith("megatron-core")] == [f"megatron-core{SUPPORTED}"]


def _checkpoint_keeping_common_state_as_megatron_0_19_does(root) -> str:
    """<root>/iter_0000004 with the common state as the torch_dist item megatron-core 0.19 writes,
    and no common.pt; the tracker names it."""
    import torch.distributed.checkpoint as checkpoint_io

    path = root / "iter_0000004"
    common = io.BytesIO()
    torch.save({"run": {"iteration": 4}}, common)
    common.seek(0)
    checkpoint_io.save({"common_state/shard_0_1": common}, storage_writer=checkpoint_io.FileSystemWriter(str(path)), no_dist=True)
    (path / "metadata.json").write_text('{"sharded_backend": "torch_dist", "sharded_backend_version": 1}')
    (root / "latest_checkpointed_iteration.txt").write_text("4\n")
    return str(path)


def test_a_checkpoint_of_megatron_0_19_is_refused_by_an_older_release(tmp_path, installed) -> None:
    from megatron_acodm.training import checkpoint

    path = _checkpoint_keeping_common_state_as_megatron_0_19_does(tmp_path)
    assert checkpoint._checkpoint_problem(path) is None  # whole: its common state is in the tensor files
    installed("0.16.1")
    with pytest.raises(UserError) as refused:
        checkpoint.open_checkpoint(str(tmp_path))
    assert str(refused.value) == (
        f"{path}: written by megatron-core 0.19 or newer (its common state is in the tensor files, not in common.pt), "
        "which megatron-core 0.16.1 cannot read; resume it with megatron-core>=0.19 (this project supports megatron-core>=0.16.1,<0.20)"
    )


def test_a_checkpoint_without_common_state_in_either_form_is_broken(tmp_path) -> None:
    import torch.distributed.checkpoint as checkpoint_io

    from megatron_acodm.training import checkpoint

    path = tmp_path / "iter_0000004"
    checkpoint_io.save({"weights": torch.zeros(2)}, storage_writer=checkpoint_io.FileSystemWriter(str(path)), no_dist=True)
    (path / "metadata.json").write_text("{}")
    assert checkpoint._checkpoint_problem(str(path)) == "common.pt is missing"
