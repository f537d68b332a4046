"""Accounts, passwords, tokens, sessions and rate limits."""
