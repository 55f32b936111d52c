"""`fleetrun local up`: the whole service on one machine, running the real `app.py` handlers.

moto in server mode stands in for AWS; the Chalice routes are served over HTTP; pollers
deliver SQS batches and stream records to the app's `on_sqs_message` / `on_dynamodb_record`
handlers exactly as event source mappings do; a scheduler fires every `@app.schedule`
handler; demo agents run as separate processes. Every part is discovered from the app's
own registrations (`app.event_sources`) and resources come from `chalicelib.resources`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import boto3
import requests
from chalice.local import ThreadedHTTPServer

from fleetrun.local import logs
from fleetrun.local.settings import LocalSettings
from fleetrun.local.wakeups import STREAM, Wakeups

DEMO_STEPS = Path(__file__).resolve().parent.parent / "agent" / "demo_steps"
#: the checkout holding app.py and chalicelib/ (the service is not part of the client package)
APP_ROOT = Path(__file__).resolve().parents[2]
_ADMIN_TOKEN_TTL = 30 * 24 * 3600
#: how long demo agents let running steps finish when the runtime stops (then they stop them)
_AGENT_GRACE_SECONDS = 1.5
#: how long an idle pump waits when no write wakes it (wakeups.py)
_PUMP_IDLE_SECONDS = 1.0
#: allocations between two young-generation collections once up (Python's default is 700)
_GC_YOUNG_THRESHOLD = 20_000
#: threads that serve until their server is shut down (every other one watches `stop_event`)
_SERVER_THREADS = frozenset({"moto", "api"})


def _environment(settings: LocalSettings, moto_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "FLEETRUN_LOCAL": "1",
        "FLEETRUN_JWT_SECRET": settings.jwt_secret,
        "FLEETRUN_LEASE_SECONDS": str(settings.lease_seconds),
        "FLEETRUN_RATE_LIMIT": str(settings.rate_limit),
        "FLEETRUN_PUBLIC_URL": settings.api_url,
        "POWERTOOLS_SERVICE_NAME": "fleetrun",
        "POWERTOOLS_METRICS_NAMESPACE": "Fleetrun",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }


def lambda_timeout_seconds(function_name: str, stage: str = "dev") -> float:
    """The deployed Lambda timeout of a function (`.chalice/config.json`: the stage's
    `lambda_functions` entry, else the stage's, else the app's `lambda_timeout`; Chalice's 60 s
    default when none says)."""
    try:
        config = json.loads((APP_ROOT / ".chalice" / "config.json").read_text())
    except (OSError, ValueError):
        return 60.0
    stage_config = config.get("stages", {}).get(stage, {})
    for scope in (stage_config.get("lambda_functions", {}).get(function_name, {}), stage_config, config):
        if "lambda_timeout" in scope:
            return float(scope["lambda_timeout"])
    return 60.0


@dataclass
class LocalRuntime:
    settings: LocalSettings
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    agents: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    admin_token: str = ""
    gateway: Any = None
    store: Any = None
    recovery: Any = None
    wakeups: Wakeups = field(default_factory=Wakeups)
    _servers: list[Any] = field(default_factory=list)

    # --- start ---------------------------------------------------------------------------
    def start(self) -> None:
        started = time.monotonic()
        if not (APP_ROOT / "app.py").exists():
            raise RuntimeError(f"`fleetrun local up` runs the service from a checkout; no app.py in {APP_ROOT}")
        if str(APP_ROOT) not in sys.path:
            sys.path.insert(0, str(APP_ROOT))
        moto_url = self._start_moto()
        api_server = self._bind_api()
        gateway = self._bind_gateway()
        os.environ.update(_environment(self.settings, moto_url))
        provisioned = self._provision()
        os.environ.update(provisioned.environment())
        app_module = importlib.import_module("app")
        from chalicelib import auth
        from chalicelib.services import selectors

        selectors.index_unindexed_nodes()  # state kept from before the label index: its nodes join it

        self.admin_token = auth.mint_token("admin", ["admin"], self.settings.jwt_secret, _ADMIN_TOKEN_TTL)
        _write_private(self.settings.admin_token_path, self.admin_token + "\n")  # before the API answers
        self._start_http(api_server, app_module)
        self._start_gateway(gateway, app_module)
        self._start_pumps(app_module, provisioned)
        self._start_scheduler(app_module)
        self._wait_healthy()
        self._start_demo_agents()
        self._publish_endpoints(moto_url)
        self._banner(time.monotonic() - started)

    def _start_moto(self) -> str:
        """moto's application behind the durable store: its state is loaded (snapshot + journal)
        before the server takes a request, and every write is journaled before it is answered."""
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        from fleetrun.local import durable, moto_fixes
        from fleetrun.local.in_process import serve_in_process

        moto_fixes.apply()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per moto request is noise
        app = moto_fixes.dispatcher()
        self.store = durable.Store(self.settings.state_dir, fsync_seconds=self.settings.fsync_seconds)
        self.recovery = self.store.open(app)
        # AWS's harsher semantics (FLEETRUN_FIDELITY=strict), once the journal is replayed as it was
        from fleetrun.local import fidelity
        from fleetrun.local.fidelity import dynamo

        dynamo.apply()
        installed = fidelity.Fidelity.from_env()
        fidelity.install(installed)
        if installed.strict:
            print(f"fidelity: strict, seed {installed.seed} (replay with FLEETRUN_FIDELITY_SEED={installed.seed})")
        released = self.store.release_in_flight()
        if released:
            print(f"{released} queued message(s) the stopped runtime was handling are delivered again")
        served = self.store.wrap(app, observer=self.wakeups.observe)
        server = make_server("127.0.0.1", self.settings.moto_port, served, threaded=True,
                             request_handler=MotoRequestHandler)
        server.daemon_threads = True  # type: ignore[attr-defined]
        self._spawn("moto", server.serve_forever)
        self._servers.append(server)
        moto_url = f"http://127.0.0.1:{server.server_port}"
        serve_in_process(moto_url, served)  # the runtime's own calls skip the socket
        return moto_url

    def _bind_api(self) -> _ApiServer:
        """The API's listening socket, bound before the app reads its settings (FLEETRUN_PORT=0
        picks a free port, and FLEETRUN_PUBLIC_URL must name the one taken)."""
        server = _ApiServer((self.settings.host, self.settings.port), _NotServing)
        self.settings = dataclasses.replace(self.settings, port=server.server_port)
        return server

    def _provision(self) -> Any:
        """The resources, created on the first start and found again in the state after that."""
        from fleetrun.local.provision import Provisioned, add_missing_indexes, provision

        known = self.store.meta.get("provisioned")
        if known:
            provisioned = Provisioned(**known)
            for name in add_missing_indexes(table_name=provisioned.table_name):
                print(f"state from before {name}: index created")
            return provisioned
        provisioned = provision()
        self.store.put_meta("provisioned", dataclasses.asdict(provisioned))
        return provisioned

    def _start_http(self, bound: _ApiServer, app_module: Any) -> None:
        from chalice.config import Config
        from chalice.local import CustomLocalChalice, LocalChalice, LocalDevServer

        from fleetrun.local.rest_gateway import ContractRequestHandler

        config = Config.create(chalice_stage="dev", app_name="fleetrun", chalice_app=app_module.app)
        CustomLocalChalice.__bases__ = (LocalChalice, app_module.app.__class__)  # what create_local_server does
        app_module.app.__class__ = CustomLocalChalice

        def adopt(address: Any, handler: Any) -> _ApiServer:
            bound.RequestHandlerClass = handler
            return bound

        server = LocalDevServer(app_module.app, config, self.settings.host, self.settings.port,
                                handler_cls=ContractRequestHandler, server_cls=adopt)
        self._servers.append(server)
        self._spawn("api", server.server.serve_forever)

    def _bind_gateway(self) -> Any:
        """The WebSocket gateway, bound before the app reads its settings: the app posts to its
        `@connections` endpoint and `GET /v1/health` advertises its URL."""
        from fleetrun.local.ws_gateway import WebSocketGateway

        gateway = WebSocketGateway(self.settings.host, self.settings.ws_port, self.settings.ws_management_port)
        self.settings = dataclasses.replace(self.settings, ws_port=gateway.ws_port)
        os.environ.update({"FLEETRUN_WEBSOCKET_ENDPOINT": gateway.management_endpoint,
                           "FLEETRUN_WEBSOCKET_URL": gateway.url})
        self.gateway = gateway
        return gateway

    def _start_gateway(self, gateway: Any, app_module: Any) -> None:
        from fleetrun.local.ws_gateway import WsHandlers

        gateway.start(WsHandlers.of_app(app_module), thread_setup=lambda: logs.set_part("ws"))
        self._servers.append(gateway)

    def _start_pumps(self, app_module: Any, provisioned: Any) -> None:
        from chalice.app import DynamoDBEventConfig, SQSEventConfig

        from chalicelib import resources
        from fleetrun.local.fidelity import current as current_fidelity
        from fleetrun.local.fidelity.streams import ShardedStreamPump
        from fleetrun.local.pumps import SqsPump, StreamPump

        specs = {spec.name: spec for spec in resources.QUEUES}
        for source in app_module.app.event_sources:
            handler = getattr(app_module, source.handler_string.split(".")[-1])
            if isinstance(source, SQSEventConfig):
                spec = specs[str(source.queue)]
                pump: Any = SqsPump(
                    boto3.client("sqs"), provisioned.queue_urls[spec.name], handler, batch_size=source.batch_size,
                    visibility_timeout=spec.visibility_timeout, function_name=source.name,
                    timeout_seconds=lambda_timeout_seconds(source.name),
                    # as on Lambda, a handler's own ChangeMessageVisibility (retry backoff) stands
                    redelivery_delay=None if spec.retry_delay_by_handler else 2,
                )
                self._spawn(source.name.replace("_worker", ""), pump.run_forever, self.stop_event, _PUMP_IDLE_SECONDS,
                            self.wakeups.queue(pump.queue_url))
            elif isinstance(source, DynamoDBEventConfig):
                # each stream consumer reads on from where it stopped (the counting one keeps the
                # key it always had; a consumer new to this state starts where the counting one is)
                key = "stream_positions" if source.name == "stream_aggregator" else f"stream_positions:{source.name}"
                positions = self.store.meta.get(key) or self.store.meta.get("stream_positions", {})
                stream_pump = ShardedStreamPump if current_fidelity().strict else StreamPump  # installed by _start_moto
                pump = stream_pump(boto3.client("dynamodbstreams"), provisioned.stream_arn, handler,
                                   batch_size=source.batch_size, function_name=source.name,
                                   timeout_seconds=lambda_timeout_seconds(source.name), positions=positions,
                                   on_advance=functools.partial(self.store.put_meta, key),
                                   describe_seconds=_PUMP_IDLE_SECONDS * 10)
                part = "stream" if source.name == "stream_aggregator" else source.name.replace("stream_", "")
                self._spawn(part, pump.run_forever, self.stop_event, _PUMP_IDLE_SECONDS, self.wakeups.event(STREAM))

    def _start_scheduler(self, app_module: Any) -> None:
        from chalice.app import ScheduledEventConfig

        jobs = [
            (source.name, getattr(app_module, source.handler_string.split(".")[-1]), self._interval(source))
            for source in app_module.app.event_sources if isinstance(source, ScheduledEventConfig)
        ]
        self._spawn("scheduler", self._schedule_loop, jobs)
        # user schedules (POST /v1/schedules): EventBridge Scheduler's part, firing onto the intake queue
        from fleetrun.local.scheduler import SchedulerStandIn

        group = os.environ["FLEETRUN_SCHEDULE_GROUP"]
        stand_in = SchedulerStandIn(boto3.client("scheduler"), boto3.client("sqs"), group,
                                    fired_until=self.store.meta.get("schedules_fired_until", {}),
                                    on_fired=lambda fired: self.store.put_meta("schedules_fired_until", fired))
        self._spawn("schedules", stand_in.run_forever, self.stop_event)

    def _interval(self, source: Any) -> float:
        if source.name == "sweep":
            return float(self.settings.sweep_seconds)
        expression = source.schedule_expression
        if hasattr(expression, "value") and hasattr(expression, "unit"):
            return float(expression.value) * {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400}[expression.unit]
        return 3600.0  # cron schedules fire hourly in local mode

    def _schedule_loop(self, jobs: list[tuple[str, Any, float]]) -> None:
        from fleetrun.local.pumps import LambdaContext

        due = {name: time.monotonic() + interval for name, _, interval in jobs}
        while not self.stop_event.wait(0.5):
            for name, handler, interval in jobs:
                if time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + interval
                try:
                    handler(_scheduled_event(name), LambdaContext(f"fleetrun-{name}"))
                except Exception as error:  # a failed run is retried at the next tick, like EventBridge
                    print(f"scheduled {name} failed: {error!r}")

    def _spawn(self, part: str, target: Any, *args: Any) -> None:
        def run() -> None:
            logs.set_part(part)
            target(*args)

        thread = threading.Thread(target=run, name=part, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.settings.api_url}/v1/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the API did not become healthy on {self.settings.api_url}")

    def _publish_endpoints(self, moto_url: str) -> None:
        """`<data dir>/endpoints.json`, written once the API answers and removed at stop: how a
        script (or a test) that started the runtime with port 0 finds the ports it took."""
        endpoints = {"pid": os.getpid(), "api": self.settings.api_url, "ws": self.settings.ws_url,
                     "ws_management": self.gateway.management_endpoint, "moto": moto_url}
        staged = self.settings.endpoints_path.with_suffix(".json.new")
        staged.write_text(json.dumps(endpoints, indent=2) + "\n")
        staged.replace(self.settings.endpoints_path)

    # --- demo agents ---------------------------------------------------------------------
    def _start_demo_agents(self) -> None:
        for i in range(1, self.settings.demo_agents + 1):
            node = f"demo-{i}"
            self.start_agent(node, self._demo_token(node))

    def _demo_token(self, node: str) -> str:
        """The demo node's token: kept (0600) beside its work directory, so a restart reuses it."""
        path = self.settings.data_dir / "agents" / node / "token"
        if path.exists():
            return path.read_text().strip()
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        body: dict[str, Any] = {"node_id": node, "labels": {"pool": "demo"}}
        answer = requests.post(f"{self.settings.api_url}/v1/nodes", json=body, headers=headers, timeout=10)
        if answer.status_code == 409:  # registered before, its token file lost: a new token
            answer = requests.post(f"{self.settings.api_url}/v1/nodes/{node}/token", headers=headers, timeout=10)
        answer.raise_for_status()
        token: str = answer.json()["token"]
        _write_private(path, token + "\n")
        return token

    def start_agent(self, node: str, token: str) -> None:
        work_dir = self.settings.data_dir / "agents" / node
        work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "fleetrun", "agent", "--api", self.settings.api_url, "--node", node,
            "--steps-dir", str(DEMO_STEPS), "--work-dir", str(work_dir), "--grace", str(_AGENT_GRACE_SECONDS),
            "--idle-poll-max", "2",  # a demo picks up new work at once; a real fleet polls less (README "Cost")
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, env=_demo_agent_environment(token),
                                   preexec_fn=_stop_with_parent)
        self.agents[node] = process
        self._spawn(f"agent {node}", self._relay, process)

    def _relay(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="")

    # --- stop ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Agents first (they stop their steps and report while the API still answers), then the
        pumps and schedulers, then the servers, then a final snapshot unless the journal is small
        (`durable.Store.close`); within about 5 s."""
        started = time.monotonic()
        self.stop_event.set()
        self.wakeups.wake_all()  # a pump waiting for work sees the stop at once
        self.settings.endpoints_path.unlink(missing_ok=True)
        for process in self.agents.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _AGENT_GRACE_SECONDS + 2.5
        for process in self.agents.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        agents_done = time.monotonic()
        # the pumps and schedulers finish the pass they are in while moto still answers it
        deadline = agents_done + 2.0
        for thread in self.threads:
            if thread.name not in _SERVER_THREADS:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stoppers = [threading.Thread(target=_stop_server, args=(server,), daemon=True) for server in self._servers]
        for stopper in stoppers:  # at once: each waits for its serve loop's next poll
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=3)
        servers_done = time.monotonic()
        kept = "nothing to keep"
        if self.store is not None:
            journal_bytes = self.store.close()
            kept = (f"wrote the final snapshot in {time.monotonic() - servers_done:.1f} s" if journal_bytes is None
                    else f"kept {journal_bytes / 1024:.0f} KB of journal for the next start to replay")
        print(f"stopped agents in {agents_done - started:.1f} s, servers in {servers_done - agents_done:.1f} s, "
              f"{kept}")

    def _banner(self, seconds: float) -> None:
        s = self.settings
        lines = [
            "",
            f"fleetrun is up in {seconds:.1f} s",
            f"  API        {s.api_url}   (OpenAPI: {s.api_url}/v1/openapi.json)",
            f"  dashboard  {s.api_url}/   (sign in with the dev admin token below)",
            f"  WebSocket  {s.ws_url}/?token=…   (@connections: {self.gateway.management_endpoint})",
            f"  agents     {', '.join(self.agents) or 'none'} (FLEETRUN_DEMO_AGENTS={s.demo_agents})",
            f"  sweeper    every {s.sweep_seconds} s, leases {s.lease_seconds} s",
            f"  state      {s.data_dir.resolve()}   ({self._state_summary()})",
            "             survives a stop and a kill -9 (no acknowledged write is lost); a machine crash loses",
            f"             at most FLEETRUN_FSYNC_SECONDS={s.fsync_seconds:g} s; `fleetrun local reset` wipes it",
            f"  dev admin token (valid 30 days, also in {s.admin_token_path}):",
            f"    {_show_on_terminal(self.admin_token)}",
            "  try:",
            f"    export FLEETRUN_URL={s.api_url} FLEETRUN_TOKEN=$(cat {s.admin_token_path})",
            "    .venv/bin/fleetrun submit slurm.scale_up -n demo-1 -n demo-2 -n demo-3 \\",
            "        --param ssh_user=root --param salt_master=salt-1 --param partition=gpu --watch",
            "Ctrl-C stops everything.",
            "",
        ]
        for line in lines:
            print(line)


    def _state_summary(self) -> str:
        r = self.recovery
        if r is None or (not r.snapshot and not r.replayed):
            return "new"
        journaled = f" + {r.replayed} journaled writes" if r.replayed else ""
        text = f"restored in {r.seconds:.1f} s: {'snapshot' if r.snapshot else 'journal'}{journaled}"
        return text + ("; a torn journal tail was dropped, see above" if r.torn else "")


class _ApiServer(ThreadedHTTPServer):
    """Chalice's threaded dev server with a listen backlog a burst of clients does not overflow."""

    request_queue_size = 128


class _NotServing:
    """The request handler of the API's socket between binding and serving (never called: the
    serve loop starts after `_start_http` has set the real one)."""


def _demo_agent_environment(token: str) -> dict[str, str]:
    """The token (in the environment, not the command line: `ps` shows that to everyone), and
    this interpreter's directory first on PATH: the demo steps start with `#!/usr/bin/env python3`,
    and a version manager's `python3` shim (pyenv's is a bash script) cost ~190 ms of CPU per step."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    return {**os.environ, "FLEETRUN_NODE_TOKEN": token, "PATH": path}


def _show_on_terminal(secret: str) -> str:
    """`secret` when the banner goes to a terminal. When stdout is a file or a pipe (a log that is
    kept, shared, pasted into an issue), the secret goes to the terminal the runtime was started
    from, if it has one, and the log gets a pointer instead: the token file says the rest."""
    if sys.stdout.isatty():
        return secret
    with contextlib.suppress(OSError), open("/dev/tty", "w") as terminal:
        terminal.write(f"fleetrun dev admin token (not written to the log): {secret}\n")
        return "(shown on the terminal only, not in this log)"
    return "(not written to this log: read it from the file above)"


def _stop_server(server: Any) -> None:
    try:
        if hasattr(server, "shutdown"):
            server.shutdown()
        else:
            server.stop()
    except Exception as error:
        print(f"stopping {type(server).__name__}: {error!r}")


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


def _stop_with_parent() -> None:
    """In a demo agent before exec: SIGTERM when the runtime dies, even by `kill -9` (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _scheduled_event(name: str) -> dict[str, Any]:
    from chalicelib import clock

    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": clock.now_iso()[:19] + "Z", "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/fleetrun-{name}"], "detail": {},
    }


def up(settings: LocalSettings | None = None) -> NoReturn:
    """Run until Ctrl-C (or SIGTERM), then end the process with its exit status. Once the final
    snapshot is written nothing is left to clean up, and letting the interpreter free a large
    state object by object took longer (12 s for 10,000 tasks) than writing it."""
    status = _serve(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _collect_less() -> None:
    """The cyclic garbage collector cost the serving runtime ~7 % of its CPU (1,000 young and 7 full
    passes during a 200-node bench task), and each full pass walks every object of the restored
    state. What exists once the runtime is up (modules, the restored state) lives as long as the
    process: it is frozen out of the collector's passes, and young objects are collected less often."""
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _serve(settings: LocalSettings | None) -> int:
    warnings.filterwarnings("ignore", message=".*HMAC key.*")  # the documented local secret is short
    stream = logs.install()
    logs.set_part("runtime")
    runtime = LocalRuntime(settings or LocalSettings.from_env())
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop_event.set())
    from fleetrun.local.durable import StateUnreadable

    try:
        runtime.start()
    except StateUnreadable as error:
        stream.emit("runtime", f"ERROR {error}")
        return 2
    except KeyboardInterrupt:
        runtime.stop()
        return 0
    _collect_less()
    try:
        while not runtime.stop_event.wait(0.5):
            for node, process in runtime.agents.items():
                if process.poll() is not None:
                    stream.emit("runtime", f"agent {node} exited with status {process.returncode}")
                    runtime.agents[node] = process  # reported once: replaced below
            runtime.agents = {n: p for n, p in runtime.agents.items() if p.poll() is None}
    except KeyboardInterrupt:
        pass
    finally:
        stream.emit("runtime", "stopping …")
        runtime.stop()
        stream.emit("runtime", "stopped")
    return 0
