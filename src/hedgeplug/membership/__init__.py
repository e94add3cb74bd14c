"""Built-in membership plugins."""
