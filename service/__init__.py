"""The monitoring service (FastAPI). It never imports torch."""
