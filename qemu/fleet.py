import sys


def main() -> int:
    print("tern-fleet: not built yet (the fleet simulator issue); nothing was done",
          file=sys.stderr)
    return 2
