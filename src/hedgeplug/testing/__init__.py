"""A kit for testing hedgeplug and its plugins: contract suites every lock
backend and transport runs against itself, supervision of throwaway real
servers (the servers themselves come from the plugin distributions), timing
helpers for benchmarks, and the pytest plugin that exposes them as fixtures."""
