"""Item features: text vectors and image-keyword vectors per item, with slot masks.

`load_item_features` (bench.features.store) builds and caches them; encoders and image taggers
are pluggable (bench.features.text_encoder, bench.features.taggers)."""
