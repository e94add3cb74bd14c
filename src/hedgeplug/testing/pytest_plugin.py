"""pytest plugin (entry point `hedgeplug` in the pytest11 group): fixtures for
plugin authors. Server fixtures start real throwaway servers on loopback."""
