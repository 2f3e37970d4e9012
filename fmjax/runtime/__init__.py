"""What a run needs from its process and machine, beneath the train loop: several hosts
(`distributed`, `launch`), signals (`preemption`), the workdir's lock, files and library logs,
and the download cache."""
