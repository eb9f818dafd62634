"""The training runtime: the shared loop, checkpoints, the metric writer, the workdir (lock, config.json,
flags.txt), and training or opening a run of any family."""
