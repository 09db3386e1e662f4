"""`python -m central` runs the `central` command."""

from central.cli import main

if __name__ == "__main__":
    main()
