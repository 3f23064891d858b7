"""Moving work in and out of sandboxes: packing trees, safe unpacking, checking patches."""
