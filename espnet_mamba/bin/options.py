"""Command-line options that several tools share."""

import argparse

import yaml


def parse_override(text: str):
    """argparse type of ``--override KEY=VALUE`` (a ModelConfig field): (key, YAML-parsed value).
    With ``action="append"``, ``dict(args.override)`` gives the overrides."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--override wants KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)
