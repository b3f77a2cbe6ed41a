"""Writing an artifact's payloads: rootfs images into the inactive slot, the rest via modules."""
