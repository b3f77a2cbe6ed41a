"""Tern device updater: installs artifacts into the inactive A/B slot."""
