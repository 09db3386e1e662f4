"""``python -m shared_protocol`` runs the technician decoder (see :mod:`shared_protocol.cli`)."""

from shared_protocol.cli import main

if __name__ == "__main__":
    main()
