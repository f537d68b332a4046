"""Kernel features shipped as plugins (see ``secureconnect.plugins.DEFAULT_PLUGINS``)."""
