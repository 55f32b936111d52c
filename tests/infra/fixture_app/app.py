"""A stand-in for app.py with the handlers later issues add (WebSocket, more queues), so the infra
tests can check how infra/ wires them. Never deployed; `chalice package` only."""

from typing import Any

from chalice.app import Chalice, Rate

#: placeholder, as in the real app.py (chalice issue 1882): infra/ overrides it
STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/fleetrun/stream/1970-01-01T00:00:00.000"

app = Chalice(app_name="fleetrun")
app.experimental_feature_flags.update(["WEBSOCKETS"])


@app.route("/v1/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.on_ws_connect()
def ws_connect(event: Any) -> None:
    pass


@app.on_ws_message()
def ws_message(event: Any) -> None:
    pass


@app.on_ws_disconnect()
def ws_disconnect(event: Any) -> None:
    pass


@app.on_sqs_message(queue="fleetrun-dispatch", batch_size=5)
def dispatch_worker(event: Any) -> dict[str, Any]:
    return {"batchItemFailures": []}


@app.on_sqs_message(queue="fleetrun-intake", batch_size=10)
def intake_worker(event: Any) -> dict[str, Any]:
    return {"batchItemFailures": []}


@app.on_sqs_message(queue="fleetrun-notify", batch_size=10)
def notify_worker(event: Any) -> dict[str, Any]:
    return {"batchItemFailures": []}


@app.on_dynamodb_record(stream_arn=STREAM_ARN, batch_size=100, starting_position="TRIM_HORIZON")
def stream_aggregator(event: Any) -> dict[str, Any]:
    return {"batchItemFailures": []}


@app.schedule(Rate(1, unit=Rate.MINUTES))
def sweep(event: Any) -> None:
    pass
