"""What the daemon serves over HTTP: one bounded server every endpoint shares."""
