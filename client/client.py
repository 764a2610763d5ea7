"""The pchat client library's public names, kept here for tests, bench/ and `pchat chat`.

The parts live in modules named for what they hold: errors, inbox (chat messages), session
(sign-in, dialog, XCCOS commands) and lean (the load generator's client).
"""

from client.errors import SipError, XccosError
from client.inbox import MAX_INBOX, ChatMessage
from client.lean import LeanClient, bound_socket
from client.pool import PoolAddresses, parse_addresses
from client.session import PchatClient

__all__ = [
    "MAX_INBOX",
    "ChatMessage",
    "LeanClient",
    "PchatClient",
    "PoolAddresses",
    "SipError",
    "XccosError",
    "bound_socket",
    "parse_addresses",
]
