"""The only place that adapts megatron.core to a CPU-only torch and gloo (inactive on GPUs), and
the one that knows which megatron-core releases the project runs on (`megatron_versions.py`: the
supported range, its one-line refusal, what differs between 0.16.1 and 0.19.2).

`activate_cpu_compat()` installs a torch function mode (`device_mode.py`: `device="cuda"`
creations land on the CPU, `.cuda()` is a no-op, `.type()` names CUDA types) and CPU answers for
the `torch.cuda` calls megatron.core makes (`cuda_stubs.py`: current_device, synchronize,
current_stream, the RNG state its tracker forks). `init_distributed()` starts torch.distributed:
gloo on CPU, nccl on GPU. The traps that remain, and the flags that avoid one, are listed in
`traps.py`.
"""

from megatron_acodm.compat.activate import activate_cpu_compat, cpu_compat_active
from megatron_acodm.compat.distributed import init_distributed
from megatron_acodm.compat.traps import pipeline_p2p_flags

__all__ = ["activate_cpu_compat", "cpu_compat_active", "init_distributed", "pipeline_p2p_flags"]
