"""The update state machine: Mender's states, a transition table, a power-safe state store."""
