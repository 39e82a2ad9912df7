"""End-to-end jobs behind the CLI commands; each takes a validated config and writes a result directory."""
