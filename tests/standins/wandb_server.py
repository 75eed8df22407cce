"""A STAND-IN for the W&B GraphQL API, for tests only.

It answers the four operations the real ``wandb`` client sends for ``wandb.sweep`` + ``wandb.agent``
(Viewer, UpsertSweep, CreateAgent, Heartbeat) on 127.0.0.1, and draws each sweep run's parameters with
W&B's own sweep engine (the ``sweeps`` package that W&B's server runs). Runs themselves are logged with
``WANDB_MODE=offline`` and read back from their local files; no W&B server can run here.

For reports built with ``wandb-workspaces`` it answers GetProjects, CreateProject, ProjectInternalId and
upsertView, and keeps each saved report's spec exactly as the client sent it, for the test to read.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import yaml

from standins import StandInServer


class WandbStandIn(StandInServer):
    def __init__(self, api_key: str = "standin" + "0" * 33, seed: int = 0) -> None:
        self.api_key = api_key
        self.sweeps: dict[str, dict[str, Any]] = {}
        self.issued: dict[str, list[Any]] = {}  # sweep name -> SweepRuns handed out
        self.agents: dict[str, str] = {}  # agent id -> sweep name
        self.operations: list[str] = []
        self.projects: set[tuple[str, str]] = set()  # (entity, project)
        self.reports: list[dict[str, Any]] = []  # upsertView variables, spec parsed
        self.variables: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        np.random.seed(seed)
        super().__init__()

    def answer(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        if operation in ("Viewer", "GetDefaultEntity"):
            return {
                "viewer": {
                    "id": "VXNlcjox",
                    "entity": "standin",
                    "username": "standin",
                    "flags": "{}",
                    "teams": {"edges": []},
                }
            }
        if operation == "UpsertSweep":
            name = variables.get("id") or f"sweep{next(self._ids)}"
            self.sweeps[name] = {
                "config": yaml.safe_load(variables["config"]),
                "entity": variables.get("entityName"),
                "project": variables.get("projectName"),
            }
            self.issued.setdefault(name, [])
            return {"upsertSweep": {"sweep": {"name": name, "id": name}, "configValidationWarnings": []}}
        if operation == "CreateAgent":
            sweep = variables["sweep"].split("/")[-1]
            if sweep not in self.sweeps:
                raise LookupError(f"sweep {sweep} not found")
            agent = f"agent{next(self._ids)}"
            self.agents[agent] = sweep
            return {"createAgent": {"agent": {"id": agent}}}
        if operation == "GetProjects":
            nodes = [
                {"node": _project(entity, name)}
                for entity, name in sorted(self.projects)
                if entity == variables.get("entity")
            ]
            return {
                "models": {
                    "pageInfo": {"__typename": "PageInfo", "endCursor": None, "hasNextPage": False},
                    "edges": nodes,
                }
            }
        if operation == "CreateProject":
            entry = variables["input"]
            self.projects.add((entry["entityName"], entry["name"]))
            project = {
                **_project(entry["entityName"], entry["name"]),
                "description": None,
                "access": "PRIVATE",
                "views": "{}",
            }
            return {"result": {"project": project, "model": project, "inserted": True}}
        if operation == "ProjectInternalId":
            known = (variables["entityName"], variables["projectName"]) in self.projects
            return {"project": {"id": "UHJvamVjdDox", "internalId": "standin-project"} if known else None}
        if operation == "upsertView":
            view_id = variables.get("id") or f"report{next(self._ids)}"
            self.reports.append({**variables, "id": view_id, "spec": json.loads(variables["spec"])})
            project = {"id": "UHJvamVjdDox", "name": variables["projectName"], "entityName": variables["entityName"]}
            view = {key: variables.get(key) for key in ("type", "name", "displayName", "description", "spec")}
            return {
                "upsertView": {
                    "view": {**view, "id": view_id, "project": project, "updatedAt": "2026-11-28T00:00:00"},
                    "inserted": True,
                }
            }
        if operation == "Heartbeat":
            return {
                "agentHeartbeat": {"agent": {"id": variables["id"]}, "commands": json.dumps(self._commands(variables))}
            }
        return {}

    def _commands(self, variables: dict[str, Any]) -> list[dict[str, Any]]:
        import sweeps

        if json.loads(variables.get("runState") or "{}"):
            return []  # a run is still going: no new command
        name = self.agents[variables["id"]]
        run = sweeps.next_run(self.sweeps[name]["config"], self.issued[name])
        if run is None:
            return [{"type": "exit"}]
        run.name = f"{name}-run{len(self.issued[name]) + 1}"
        run.state = sweeps.RunState.finished
        self.issued[name].append(run)
        args = {key: {"value": _plain(entry["value"])} for key, entry in run.config.items()}
        return [{"type": "run", "run_id": run.name, "program": None, "args": args}]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                header = self.headers.get("Authorization", "")
                key = base64.b64decode(header[6:]).decode().partition(":")[2] if header.startswith("Basic ") else ""
                if key != standin.api_key:
                    self._send(HTTPStatus.UNAUTHORIZED, {"errors": [{"message": "invalid api key"}]})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                match = re.search(r"(?:query|mutation)\s+(\w+)", body.get("query", ""))
                operation = match.group(1) if match else "?"
                with standin.lock:
                    standin.operations.append(operation)
                    standin.variables.append(body.get("variables") or {})
                    try:
                        data = standin.answer(operation, body.get("variables") or {})
                    except LookupError as error:  # as W&B answers for an unknown sweep: a GraphQL error
                        self._send(HTTPStatus.OK, {"errors": [{"message": str(error)}], "data": None})
                        return
                self._send(HTTPStatus.OK, {"data": data})

            def _send(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def _project(entity: str, name: str) -> dict[str, Any]:
    return {
        "__typename": "Project",
        "id": f"{entity}/{name}",
        "name": name,
        "entityName": entity,
        "createdAt": "2026-11-28T00:00:00",
        "isBenchmark": False,
        "user": None,
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
