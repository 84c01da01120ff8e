"""Core: errors, console output and logging, waiting. Imports nothing else of the toolkit."""
