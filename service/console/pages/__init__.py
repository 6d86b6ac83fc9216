"""The console's pages, one module per resource, and what they share (``common``)."""
