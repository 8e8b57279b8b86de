"""`pi-infer train`: your own labels on the frozen backbone the daemon runs, with a small head."""
