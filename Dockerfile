# megatron-acodm on NVIDIA's PyTorch image: CUDA, NCCL, Transformer Engine, apex and Triton come
# from the image. 25.01 ships Python 3.12; its own megatron-core is replaced by the 0.16.1 release
# this project is tested against (a newer one may work but is untested).
FROM nvcr.io/nvidia/pytorch:25.01-py3

WORKDIR /workspace/megatron-acodm
COPY pyproject.toml README.md ./
COPY megatron_acodm ./megatron_acodm
RUN pip install --no-cache-dir "megatron-core==0.16.1" && pip install --no-cache-dir -e ".[test]"
COPY . .

# Check at build time that the pinned megatron-core and the image's torch import together.
RUN python -c "import megatron.core, torch, megatron_acodm.data; print('megatron-core', megatron.core.__version__, 'torch', torch.__version__)"
