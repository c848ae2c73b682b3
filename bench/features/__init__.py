"""Item features: text vectors and image-keyword vectors per item, with slot masks."""
