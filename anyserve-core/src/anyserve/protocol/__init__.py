"""The wire contract: every message, codec and name anyserve speaks, in one package."""
