"""Emulated ARM64 devices under QEMU: launch, console, power, and test fixtures."""
