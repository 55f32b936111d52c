"""The dashboard: static ES modules served by the app itself at `/` and `/ui/<file>` (no build step)."""
