"""Independent estimates of the scan prior run at once, each on its share of the threads.

The scan prior's passes (`physics.prior_scan`) are many small operations (a mini-batch of
32 windows of 64x64 each), which gain little from a second intra-op thread and, with idle
threads that sleep (``OMP_WAIT_POLICY=PASSIVE``, which ``ptychopinn`` sets), pay its
wake-up on every one: on 2 CPU cores the whole scan's 24 passes over 625 patterns took as
long on one intra-op thread as on two (2.3 s; 1.5 s with threads that spin, which slow
everything else on a shared CPU; docs/benchmarks.md, twenty-eighth session). Independent
estimates (the FRC filter's two halves, `physics.prior_frc`; the batch orders of
`physics.prior_orders`) therefore run at once, in worker threads of their own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


def at_once(fn, *per_task, device: torch.device) -> list:  # noqa: ANN001
    """``[fn(*args) for args in zip(*per_task)]``, the tasks at once on the CPU.

    There they run in ``min(tasks, intra-op threads)`` worker threads, each task on that
    many times fewer intra-op threads (at least one); the thread count is set in each
    worker thread and is that thread's own, so the caller's is unchanged. Every task's
    result is the same as run in turn on as many threads. On accelerators, with one task
    or one intra-op thread they run in turn. The workers run in the caller's grad and
    inference modes (both per thread as well)."""
    args = list(zip(*per_task, strict=True))
    total = torch.get_num_threads()
    if device.type != "cpu" or len(args) < 2 or total < 2:
        return [fn(*a) for a in args]
    workers = min(len(args), total)
    threads = max(1, total // workers)

    # grad and inference modes are per thread too: the workers take the caller's
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def one(a: tuple) -> object:
        torch.set_num_threads(threads)  # this worker thread's setting only
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(*a)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, args))
    finally:
        # per thread under OpenMP (PyTorch's CPU builds); a build whose setting is global
        # gets the caller's back
        if torch.get_num_threads() != total:
            torch.set_num_threads(total)
