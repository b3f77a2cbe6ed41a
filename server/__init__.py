"""Tern management server."""
