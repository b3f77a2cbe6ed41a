"""Tern device updater: installs artifacts into the inactive A/B slot."""

__version__ = "0.1.0"
