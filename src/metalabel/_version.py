"""The package version, in a module below every room so the store and the exports can record it."""

__version__ = "0.1.0"
