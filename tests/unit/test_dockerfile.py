"""The Dockerfile keeps what NVIDIA's PyTorch image ships: no `pip install` in it replaces torch,
Triton, Transformer Engine or apex, neither by naming one nor through an extra of this project
(the `test` extra pins the Triton of the CPU build of torch), and it installs a megatron-core
release of the supported range built for the image's Python 3.12.

No container engine runs where the tests do, so the Dockerfile is read, not built: every RUN
instruction is split into shell commands, and each pip install's requirements are checked against
the image's packages. Requirements of the installed packages themselves are not followed
(megatron-core 0.19.2 asks for torch>=2.6.0, numpy and packaging, which 25.12's torch meets)."""

from __future__ import annotations

import os
import re
import shlex

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from megatron_acodm.compat.megatron_versions import SUPPORTED

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = "nvcr.io/nvidia/pytorch:25.12-py3"
# What that image ships and this project must not replace, by distribution name; the version where
# the image's release notes give it (torch 2.10.0a0+b4e4ee81d3), else None: then any version
# requirement on the package is taken as a replacement.
IMAGE_PACKAGES = {
    "torch": "2.10.0a0+b4e4ee81d3",
    "triton": None,
    "pytorch-triton": None,
    "transformer-engine": None,
    "transformer-engine-torch": None,
    "transformer-engine-cu12": None,
    "transformer-engine-cu13": None,
    "apex": None,
}
PIP_OPTIONS_WITH_VALUES = {
    "-t", "--target", "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--prefix", "--root",
    "--python-version", "--platform", "--implementation", "--abi", "--upgrade-strategy", "--src", "--cache-dir",
    "--progress-bar", "--report", "--config-settings", "-C", "--global-option", "--log", "--timeout", "--retries",
}
REPLACING_OPTIONS = {"-U", "--upgrade", "--force-reinstall", "-I", "--ignore-installed"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def run_commands(dockerfile: str) -> list[list[str]]:
    """The shell commands of the Dockerfile's RUN instructions, each as its words."""
    text = re.sub(r"\\\n", " ", dockerfile)  # continuation lines
    commands = []
    for line in text.splitlines():
        instruction, _, shell = line.strip().partition(" ")
        if instruction.upper() != "RUN":
            continue
        lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in lexer:
            if word in SHELL_OPERATORS:
                commands.append(command)
                command = []
            else:
                command.append(word)
        commands.append(command)
    return [command for command in commands if command]


def pip_install_arguments(command: list[str]) -> list[str] | None:
    """The words after `install` of a pip install command (pip, pip3, python -m pip), else None."""
    for index in range(1, len(command)):
        before = command[index - 1]
        is_pip = os.path.basename(before) in {"pip", "pip3"} or (before == "pip" and index >= 2 and command[index - 2] == "-m")
        if is_pip and command[index] == "install":
            return command[index + 1:]
    return None


def project_requirements(extras: str, pyproject: dict) -> list[str]:
    """This project's own requirements and those of the extras named in `.[a,b]`."""
    project = pyproject["project"]
    named = [name.strip() for name in extras.strip("[]").split(",") if name.strip()]
    return list(project["dependencies"]) + [line for name in named for line in project["optional-dependencies"][name]]


def image_package_problems(dockerfile: str, pyproject: dict) -> list[str]:
    """Each pip install requirement of `dockerfile` that would replace an image package, or that
    cannot be checked (a requirements file, a path other than the project's)."""
    problems = []
    for command in run_commands(dockerfile):
        arguments = pip_install_arguments(command)
        if arguments is None:
            continue
        replacing = sorted(REPLACING_OPTIONS.intersection(arguments))
        words = iter(arguments)
        for word in words:
            if word in {"-r", "--requirement", "-c", "--constraint"}:
                problems.append(f"{word} {next(words, '')}: a requirements file cannot be checked; name the requirements")
                continue
            if word in PIP_OPTIONS_WITH_VALUES:
                next(words, None)
                continue
            if word in {"-e", "--editable"}:
                word = next(words, "")
            elif word.startswith("-"):
                continue
            match = re.fullmatch(r"\.(\[[^\]]*\])?", word)
            if match:
                requirements = project_requirements(match.group(1) or "", pyproject)
            elif word.startswith((".", "/")):
                problems.append(f"{word}: a path other than the project cannot be checked")
                continue
            else:
                requirements = [word]
            for line in requirements:
                requirement = Requirement(line)
                name = canonicalize_name(requirement.name)
                if name not in IMAGE_PACKAGES:
                    continue
                version = IMAGE_PACKAGES[name]
                if replacing:
                    problems.append(f"{word}: {' '.join(replacing)} would replace the image's {name}")
                elif requirement.specifier and not (version and requirement.specifier.contains(version, prereleases=True)):
                    problems.append(f"{word}: {line} would replace the image's {name}")
    return problems


@pytest.fixture(scope="module")
def dockerfile() -> str:
    with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as stream:
        return stream.read()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as stream:
        return tomllib.load(stream)


EXTRAS = {"project": {"dependencies": ["torch>=2.4", "numpy>=1.26"],
                      "optional-dependencies": {"test": ["pytest>=8", "triton==3.9.0"], "demo": ["pyyaml>=6.0"]}}}


def test_the_dockerfile_replaces_no_package_of_the_image(dockerfile: str, pyproject: dict) -> None:
    assert image_package_problems(dockerfile, pyproject) == []


def test_the_base_image_is_the_one_whose_packages_are_listed(dockerfile: str) -> None:
    # A new base image needs IMAGE_PACKAGES read again from its release notes.
    assert re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE) == [IMAGE]


def test_the_dockerfile_installs_a_supported_megatron_core_for_python_3_12(dockerfile: str) -> None:
    pins = [word for command in run_commands(dockerfile) for word in (pip_install_arguments(command) or [])
            if word.startswith("megatron-core")]
    assert len(pins) == 1
    requirement = Requirement(pins[0])
    (specifier,) = requirement.specifier
    assert specifier.operator == "=="
    # 0.17 is the first release for Python 3.12 only, the image's Python.
    assert Version(specifier.version) in SpecifierSet(SUPPORTED) and Version(specifier.version) >= Version("0.17")


def test_an_extra_that_pins_triton_is_found() -> None:
    assert image_package_problems('RUN pip install --no-cache-dir -e ".[test]"\n', EXTRAS) == [
        ".[test]: triton==3.9.0 would replace the image's triton"
    ]
    assert image_package_problems('RUN pip install -e ".[demo]" pytest\n', EXTRAS) == []


@pytest.mark.parametrize("run, problems", [
    ("RUN pip install torch==2.5.1", ["torch==2.5.1: torch==2.5.1 would replace the image's torch"]),
    ("RUN pip install 'torch>=2.4' 'torch<2.10'", ["torch<2.10: torch<2.10 would replace the image's torch"]),
    ("RUN pip3 install -U torch", ["torch: -U would replace the image's torch"]),
    ("RUN python3 -m pip install --no-cache-dir 'transformer_engine[pytorch]==2.9'",
     ["transformer_engine[pytorch]==2.9: transformer_engine[pytorch]==2.9 would replace the image's transformer-engine"]),
    ("RUN pip install --force-reinstall apex", ["apex: --force-reinstall would replace the image's apex"]),
    ("RUN pip install apex 'torch>=2.4' && pip install --no-cache-dir triton", []),
    ('RUN python -c "import a; print(1)" && \\\n    pip install "triton>=3"', ["triton>=3: triton>=3 would replace the image's triton"]),
    ("RUN pip install -r requirements.txt", ["-r requirements.txt: a requirements file cannot be checked; name the requirements"]),
    ("RUN pip install ./vendor/pkg", ["./vendor/pkg: a path other than the project cannot be checked"]),
])
def test_a_replacement_of_an_image_package_is_found(run: str, problems: list[str]) -> None:
    assert image_package_problems(run + "\n", EXTRAS) == problems
