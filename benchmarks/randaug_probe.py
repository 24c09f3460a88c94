"""Where the batched RandAugment's time goes on the GPU: host dispatch per call vs GPU time, top kernels."""
import time

import torch

from mobilemamba.data.batch_randaug import BatchRandAugment
from mobilemamba.data.randaug_spec import parse_rand_augment

x = torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8, device="cuda")
ra = BatchRandAugment(parse_rand_augment("rand-m9-mstd0.5-inc1"), seed=0)
for _ in range(5):
    ra(x)
torch.cuda.synchronize()
host, gpu = [], []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter(); s.record(); ra(x); e.record(); host.append(time.perf_counter() - t0)
    e.synchronize(); gpu.append(s.elapsed_time(e))
host.sort(); gpu.sort()
print(f"host dispatch {1e3 * host[10]:.2f} ms/call, GPU span {gpu[10]:.2f} ms/call (medians of 20)")
activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
with torch.profiler.profile(activities=activities) as p:
    for _ in range(3):
        ra(x)
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=50))
print(p.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=50))
