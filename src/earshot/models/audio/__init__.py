"""Audio towers, one file per architecture family; each registers its encoders and converters."""
