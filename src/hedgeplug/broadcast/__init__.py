"""Built-in broadcast plugins."""
