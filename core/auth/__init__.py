"""Authentication policy shared by the SIP and HTTP sign-ins (sans-IO)."""
