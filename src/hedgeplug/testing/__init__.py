"""A kit for testing hedgeplug and its plugins: contract suites every lock
backend and transport runs against itself, throwaway real servers, and the
pytest plugin that exposes them as fixtures."""
