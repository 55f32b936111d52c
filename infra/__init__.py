"""fleetrun's AWS infrastructure: a CDK app (`python infra/app.py`) around the Chalice app."""
