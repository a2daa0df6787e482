"""Thin adapters between the backbone and ESPnet: the ``mamba_hubert`` encoder and SSL model,
task classes that register them, and checkpoint loading."""
