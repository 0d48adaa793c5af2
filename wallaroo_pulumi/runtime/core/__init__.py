"""Infrastructure every layer may use: errors, the admin token, secret encryption, metrics."""
