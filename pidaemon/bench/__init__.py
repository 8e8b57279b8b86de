"""`pi-infer bench`: pi-infer against the tutorial loop and LiteRT, measured side by side."""
