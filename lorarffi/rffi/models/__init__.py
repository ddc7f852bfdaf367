"""Neural network models, one file per family, registered by name."""
