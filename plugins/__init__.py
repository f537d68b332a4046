"""Built-in feature plugins, installed as ``secureconnect_plugins.<name>`` and loaded
through the ``secureconnect`` entry-point group like any third-party plugin."""
