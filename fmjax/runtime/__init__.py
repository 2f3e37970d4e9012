"""What a run needs from its process and machine, beneath the train loop: several hosts
(`distributed`, `launch`), signals (`preemption`), the workdir's lock, files (local or gs://)
and library logs, profiler traces, and the download cache."""
