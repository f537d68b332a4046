"""Suite-wide switches. Fixtures for apps live in secureconnect.testing (pytest11)."""
