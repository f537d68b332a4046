"""Summary and smart-reply providers behind one interface (:mod:`.base`)."""
