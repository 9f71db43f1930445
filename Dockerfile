# megatron-acodm on NVIDIA's PyTorch image, release 25.12: Python 3.12, torch 2.10.0a0 (CUDA 13.1),
# with the image's own Triton, Transformer Engine and NCCL. Those are kept as the image has them:
# nothing installed here names them or a version of them (tests/unit/test_dockerfile.py checks it),
# and the image's pip refuses to replace a package it shipped (/etc/pip/constraint.txt).
FROM nvcr.io/nvidia/pytorch:25.12-py3

WORKDIR /workspace/megatron-acodm
COPY pyproject.toml README.md ./
COPY megatron_acodm ./megatron_acodm
# megatron-core 0.19.2, the release tested for Python 3.12; then the project, its optional parts and
# pytest. Not the `test` extra: it pins the Triton that the CPU build of torch needs.
RUN pip install --no-cache-dir "megatron-core==0.19.2" \
    && pip install --no-cache-dir -e ".[demo,zstd,mergemix]" "pytest>=8" "pytest-xdist>=3.5"
COPY . .

# Check at build time that megatron-core is in the supported range and imports with the image's torch.
RUN python -c "import torch, megatron.core, megatron_acodm.data; from megatron_acodm.compat.megatron_versions import check_supported; print('megatron-core', check_supported(), 'torch', torch.__version__)"
