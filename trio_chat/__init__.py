"""trio-chat: a self-hosted terminal chat server and client on Trio."""

__version__ = "0.1.0"

#: The wire protocol's version, named in the server's HELLO line.
PROTOCOL_VERSION = "trio-chat/1"
