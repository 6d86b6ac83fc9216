"""The ``acklog`` command line."""
