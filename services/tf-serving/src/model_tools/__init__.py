"""Model tooling: export a Keras model for TF Serving (SavedModel + manifest + warmup)."""
