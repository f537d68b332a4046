"""Push providers: one module per delivery service, each behind :class:`.base.Provider`."""
