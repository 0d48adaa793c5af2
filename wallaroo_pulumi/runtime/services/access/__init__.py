"""Who may call the runtime: API keys with roles and scopes (keys), the rule each route needs
(policy), what a request touches (targets), per-key limits and usage metering, and the
middleware that applies them before any route runs (D32)."""
