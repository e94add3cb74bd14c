"""Built-in lock plugins."""
