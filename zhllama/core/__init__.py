"""Library layer: everything the CLI does lives here, importable and testable without Typer."""
