"""Tiny grid files for the runner's and executors' tests: two seeds of width-8 networks,
6 steps logged every 3, so a whole study compiles and runs in seconds."""

from __future__ import annotations


def tiny_grid(name: str, axes: str, *, study: str = "") -> str:
    """The text of a tiny study ``name`` whose [axes] section is ``axes`` (TOML lines);
    ``study``: extra [study] lines."""
    return f"""
[study]
name = "{name}"
seeds = 2
{study}
[fixed]
width = 8
batch_size = 16
steps = 6
log_every = 3
[axes]
{axes}
"""
