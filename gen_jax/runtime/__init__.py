"""Training: train states, jitted steps, the shared loop, checkpoints and metric writers."""
