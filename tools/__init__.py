"""Developer tools that are not part of the library or its test suite (e.g. ``python -m tools.soak``)."""
