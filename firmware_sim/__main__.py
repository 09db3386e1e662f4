"""`python -m firmware_sim` runs the `firmware-sim` command."""

from firmware_sim.cli import main

if __name__ == "__main__":
    main()
