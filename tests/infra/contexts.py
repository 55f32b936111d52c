"""The CDK context the infra tests synthesize with, and what the tests expect from it."""

from __future__ import annotations

#: the fixture app's stack takes an external OIDC issuer instead of a Cognito user pool
FIXTURE_ISSUER, FIXTURE_AUDIENCE = "https://issuer.example.com", "fleetrun-api"
#: and Harbor settings (image sync): its functions may read exactly these two secrets
FIXTURE_HARBOR_URL = "https://harbor.example.com"
FIXTURE_HARBOR_SECRETS = ("arn:aws:secretsmanager:us-east-1:123456789012:secret:harbor-robot-AbCdEf",
                          "arn:aws:secretsmanager:us-east-1:123456789012:secret:harbor-hook-GhIjKl")
#: the e-mail sender prod is synthesized with (dev has none: its email channel is off)
NOTIFY_SENDER = "notifications@example.com"
