"""Entry points: one absl app per model family. Each defines flags, builds a config and calls the library."""
