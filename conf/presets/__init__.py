"""Model presets, one YAML file each; installed as the package espnet_mamba.presets."""
