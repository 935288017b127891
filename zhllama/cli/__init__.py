"""Typer layer: thin commands that parse flags and call into `zhllama.core`."""
