"""Alarms to one SNS topic: dead letters, stream lag, Lambda errors and throttles, API 5xx."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.chalice_app import ChaliceApp
from infra.data import DataStores
from infra.settings import StageSettings

#: a stream record older than this has not been aggregated: statistics and push are behind
ITERATOR_AGE_LIMIT = Duration.minutes(1)
API_5XX_PER_5_MINUTES = 5


class Alarms(Construct):
    def __init__(self, scope: Construct, construct_id: str, settings: StageSettings, data: DataStores,
                 app: ChaliceApp) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", topic_name=f"{settings.prefix}-alarms",
                               display_name=f"fleetrun {settings.stage} alarms", enforce_ssl=True)
        if settings.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        self.alarms: list[cloudwatch.Alarm] = []
        prefix = settings.prefix

        for dlq in data.dead_letter_queues:
            self._add(f"{dlq.node.id}Depth", f"{prefix}: messages in dead-letter queue {dlq.node.id}",
                      dlq.metric_approximate_number_of_messages_visible(period=Duration.minutes(1),
                                                                        statistic="Maximum"),
                      threshold=1)
        for logical_id, fn in app.functions.items():
            name = app.function_name(logical_id)
            self._add(f"{logical_id}Errors", f"{prefix}: {fn.handler} raised errors",
                      _lambda_metric("Errors", name), threshold=1)
            self._add(f"{logical_id}Throttles", f"{prefix}: {fn.handler} was throttled",
                      _lambda_metric("Throttles", name), threshold=1)
            if fn.reads_stream:
                self._add(f"{logical_id}IteratorAge", f"{prefix}: {fn.handler} lags behind the table stream",
                          _lambda_metric("IteratorAge", name, statistic="Maximum", period=Duration.minutes(1)),
                          threshold=ITERATOR_AGE_LIMIT.to_milliseconds(), evaluation_periods=5)
        self._add("Api5xx", f"{prefix}: the API answered 5xx",
                  cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="5XXError", statistic="Sum",
                                    period=Duration.minutes(5),
                                    dimensions_map={"ApiName": app.rest_api_name, "Stage": app.api_gateway_stage}),
                  threshold=API_5XX_PER_5_MINUTES)
        if app.has_websocket:
            # WebSocket APIs have no 5XXError metric: integration failures are their server errors
            self._add("WebSocketErrors", f"{prefix}: the WebSocket API failed to run its handlers",
                      cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="IntegrationError", statistic="Sum",
                                        period=Duration.minutes(5),
                                        dimensions_map={"ApiId": app.websocket_api_id, "Stage": app.websocket_stage}),
                      threshold=API_5XX_PER_5_MINUTES)

    def _add(self, construct_id: str, description: str, metric: cloudwatch.Metric, *, threshold: float,
             evaluation_periods: int = 1) -> None:
        alarm = metric.create_alarm(
            self, construct_id,
            alarm_description=description,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)


def _lambda_metric(name: str, function_name: str, *, statistic: str = "Sum",
                   period: Duration | None = None) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace="AWS/Lambda", metric_name=name, statistic=statistic,
                             period=period or Duration.minutes(5), dimensions_map={"FunctionName": function_name})
