"""Opening models: what a name or path means, and the readers that open each kind."""
