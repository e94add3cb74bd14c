"""Exceptions shared by the core and plugins.

Every error a user can cause (config, plugin choice, CLI arguments) is a
HedgeplugError whose message names what was wrong; the command prints the
message and exits 2 instead of showing a traceback.
"""

from __future__ import annotations


class HedgeplugError(Exception):
    """Base class for every error hedgeplug raises on purpose."""


class ConfigError(HedgeplugError):
    """The configuration is invalid; the message names file, key and what is allowed."""


class PluginError(HedgeplugError):
    """A plugin is missing, broken, or registered twice."""


class StoreError(HedgeplugError):
    """The lock store failed (unreachable, refused, misconfigured).

    Lock backends raise this (or a subclass) for store trouble; the election
    treats it as a failed attempt, never as a crash.
    """


class TransportError(HedgeplugError):
    """A frame could not be delivered or no reply came back."""


class RequestTimeout(TransportError, TimeoutError):
    """No reply within the timeout."""


class FrameTooLarge(TransportError):
    """A frame exceeds the configured size limit."""


class NoLeader(HedgeplugError):
    """No leader became known within the timeout."""


class RemoteError(HedgeplugError):
    """The remote handler raised; the message carries its description."""


class StreamClosed(TransportError):
    """A stream ended before its other side finished it: cancelled, crashed,
    or refused; the message names the peer and what happened."""


class LeaderChangedError(StreamClosed):
    """The leader changed while a stream to it was open (raised on both ends)."""
