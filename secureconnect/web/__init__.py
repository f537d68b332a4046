"""The web client shell, admin API and docs pages served by the kernel's ``web`` plugin."""
