"""The ``ptychopinn`` command line."""
