"""Plain torch / diffusers / transformers networks, built from config; no Lightning here."""
