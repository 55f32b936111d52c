"""Who may call the API: a Cognito user pool, or an external OIDC issuer given by context.

The app verifies user JWTs itself (chalicelib/auth.py: issuer, audience, JWKS) because the same
API also serves agents, whose bearer tokens are node tokens, not JWTs: so there is no API
Gateway authorizer. Roles come from the `cognito:groups` claim: the pool has one group per role.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from infra.settings import StageSettings

ROLE_GROUPS = ("admin", "operator", "viewer")


class Identity(Construct):
    def __init__(self, scope: Construct, construct_id: str, settings: StageSettings) -> None:
        super().__init__(scope, construct_id)
        self.user_pool: cognito.UserPool | None = None
        self.client: cognito.UserPoolClient | None = None
        if settings.oidc_issuer and settings.oidc_audience:
            self.issuer, self.audience = settings.oidc_issuer, settings.oidc_audience
            return
        self.user_pool = cognito.UserPool(
            self, "UserPool",
            user_pool_name=settings.prefix,
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True, username=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            password_policy=cognito.PasswordPolicy(min_length=12, require_symbols=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            deletion_protection=settings.is_prod,
            removal_policy=RemovalPolicy.RETAIN if settings.is_prod else RemovalPolicy.DESTROY,
        )
        for role in ROLE_GROUPS:
            cognito.CfnUserPoolGroup(self, f"{role.capitalize()}Group", user_pool_id=self.user_pool.user_pool_id,
                                     group_name=role, description=f"fleetrun {role}")
        self.client = self.user_pool.add_client(
            "CliClient",
            user_pool_client_name=f"{settings.prefix}-cli",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True, user_password=True),
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
            prevent_user_existence_errors=True,
        )
        #: the app checks ID tokens: their `aud` is the client id
        self.issuer = self.user_pool.user_pool_provider_url
        self.audience = self.client.user_pool_client_id
