"""The package version (a leaf module, so that any layer can name it without importing the package root)."""
__version__ = "0.3.0.dev0"  # the one place: pyproject.toml reads it
