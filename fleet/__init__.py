"""The fleet simulator (`tern-fleet`): many devices running the real updater against a
server. It combines `updater/` and the server's API, as the tests do; neither imports it."""
