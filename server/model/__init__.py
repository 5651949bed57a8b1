"""The AudioLM stages: one KV-cached decoder-only transformer, token layouts, sampling."""
