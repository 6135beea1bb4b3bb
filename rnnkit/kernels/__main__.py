"""``python -m rnnkit.kernels``: compile the fused loops now, not on first use."""

import time

from rnnkit.kernels.fused import DTYPES, warm_up

start = time.perf_counter()
warm_up()
print(f"rnnkit's fused loops ready for {', '.join(map(str, DTYPES))} "
      f"in {time.perf_counter() - start:.1f} s")
