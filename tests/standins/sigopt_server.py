"""A STAND-IN for the SigOpt REST API (Core module), for tests only.

It serves the endpoints the real ``sigopt`` client calls for experiments, suggestions, observations and
best_assignments, on 127.0.0.1, with the JSON shapes the client parses. Its "optimizer" draws uniformly at
random (log-uniformly for ``transformation: log``, from ``grid`` when given): it checks hpsearch's parameter
mapping and the client round trip, not SigOpt's Bayesian optimisation. The real service is not reachable here.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import random
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from standins import StandInServer

PARAMETER_TYPES = ("double", "int", "categorical")


class SigOptStandIn(StandInServer):
    def __init__(self, token: str = "standin-token", seed: int = 0) -> None:
        self.token = token
        self.random = random.Random(seed)
        self.experiments: dict[str, dict[str, Any]] = {}
        self.suggestions: dict[str, dict[str, Any]] = {}
        self.observations: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        super().__init__()

    # --- the API -------------------------------------------------------------------------------
    def create_experiment(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for parameter in body.get("parameters", []):
            problem = _parameter_problem(parameter)
            if problem:
                return HTTPStatus.BAD_REQUEST, {"message": problem}
        experiment_id = str(next(self._ids))
        experiment = {
            "object": "experiment",
            "id": experiment_id,
            "created": int(time.time()),
            "state": "active",
            "type": body.get("type", "offline"),
            "name": body.get("name"),
            "parameters": body.get("parameters", []),
            "conditionals": body.get("conditionals", []),
            "metrics": [{"object": "metric", "strategy": "optimize", **m} for m in body.get("metrics", [])],
            "observation_budget": body.get("observation_budget"),
            "parallel_bandwidth": body.get("parallel_bandwidth", 1),
            "metadata": body.get("metadata"),
        }
        self.experiments[experiment_id] = experiment
        self.observations[experiment_id] = []
        return HTTPStatus.OK, self._with_progress(experiment)

    def _with_progress(self, experiment: dict[str, Any]) -> dict[str, Any]:
        count = len(self.observations[experiment["id"]])
        return {**experiment, "progress": {"object": "progress", "observation_count": count}}

    def suggest(self, experiment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A drawn suggestion, or, as SigOpt's API does, one with the ``assignments`` the request gives."""
        experiment = self.experiments[experiment_id]
        assignments = body.get("assignments") or self._assignments(experiment)
        suggestion = {
            "object": "suggestion",
            "id": str(next(self._ids)),
            "experiment": experiment_id,
            "assignments": assignments,
            "state": "open",
            "created": int(time.time()),
        }
        self.suggestions[suggestion["id"]] = suggestion
        return suggestion

    def _assignments(self, experiment: dict[str, Any]) -> dict[str, Any]:
        """Each conditional's value, then each parameter whose ``conditions`` those values meet (SigOpt's rule)."""
        drawn = {c["name"]: self.random.choice(c["values"]) for c in experiment.get("conditionals") or []}
        for parameter in experiment["parameters"]:
            conditions = parameter.get("conditions") or {}
            if all(drawn.get(name) in values for name, values in conditions.items()):
                drawn[parameter["name"]] = self._draw(parameter)
        return drawn

    def _draw(self, parameter: dict[str, Any]) -> Any:
        if parameter.get("grid"):
            value = self.random.choice(parameter["grid"])
            return int(value) if parameter["type"] == "int" else float(value)
        if parameter["type"] == "categorical":
            return self.random.choice([_choice_name(c) for c in parameter["categorical_values"]])
        low, high = parameter["bounds"]["min"], parameter["bounds"]["max"]
        if parameter.get("transformation") == "log":
            value = math.exp(self.random.uniform(math.log(low), math.log(high)))
            return min(max(round(value), int(low)), int(high)) if parameter["type"] == "int" else value
        if parameter["type"] == "int":
            return self.random.randint(int(low), int(high))
        return self.random.uniform(low, high)

    def observe(self, experiment_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        suggestion = self.suggestions.get(str(body.get("suggestion")))
        if suggestion is None:
            return HTTPStatus.BAD_REQUEST, {"message": "observation needs an open suggestion id"}
        failed = bool(body.get("failed"))
        names = [m["name"] for m in self.experiments[experiment_id]["metrics"]]
        values = body.get("values") or []
        if not failed and sorted(v["name"] for v in values) != sorted(names):
            return HTTPStatus.BAD_REQUEST, {"message": f"values must name every metric {names}"}
        suggestion["state"] = "closed"
        observation = {
            "object": "observation",
            "id": str(next(self._ids)),
            "experiment": experiment_id,
            "suggestion": suggestion["id"],
            "assignments": suggestion["assignments"],
            "failed": failed,
            "values": None if failed else [{"object": "metric_evaluation", **v} for v in values],
            "metadata": body.get("metadata"),
            "created": int(time.time()),
        }
        self.observations[experiment_id].append(observation)
        return HTTPStatus.OK, observation

    def best_assignments(self, experiment_id: str) -> list[dict[str, Any]]:
        """The best observation, or the Pareto front of a multi-metric experiment, among the observations that
        meet every constraint metric's threshold (SigOpt's own rule)."""
        metrics = [m for m in self.experiments[experiment_id]["metrics"] if m["strategy"] == "optimize"]
        limits = [m for m in self.experiments[experiment_id]["metrics"] if m["strategy"] == "constraint"]
        signs = {m["name"]: 1.0 if m.get("objective", "maximize") == "maximize" else -1.0 for m in metrics}

        def feasible(observation: dict[str, Any]) -> bool:
            by_name = {v["name"]: v["value"] for v in observation["values"]}
            return all(
                by_name[m["name"]] <= m["threshold"]
                if m.get("objective") == "minimize"
                else by_name[m["name"]] >= m["threshold"]
                for m in limits
            )

        done = [o for o in self.observations[experiment_id] if not o["failed"] and feasible(o)]

        def score(observation: dict[str, Any]) -> list[float]:
            by_name = {v["name"]: v["value"] for v in observation["values"]}
            return [signs[name] * by_name[name] for name in signs]

        def dominated(a: list[float], b: list[float]) -> bool:
            return all(x <= y for x, y in zip(a, b, strict=False)) and any(x < y for x, y in zip(a, b, strict=False))

        front = [o for o in done if not any(dominated(score(o), score(p)) for p in done)]
        if len(metrics) == 1 and front:
            front = [max(front, key=lambda o: score(o)[0])]
        return [
            {"object": "best_assignments", "id": o["id"], "assignments": o["assignments"], "values": o["values"]}
            for o in front
        ]

    def delete_open_suggestions(self, experiment_id: str, suggestion_id: str | None) -> tuple[int, None]:
        for suggestion in self.suggestions.values():
            if suggestion["experiment"] == experiment_id and suggestion_id in (None, suggestion["id"]):
                suggestion["state"] = "closed"
        return HTTPStatus.NO_CONTENT, None

    # --- HTTP ----------------------------------------------------------------------------------
    def handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: Any) -> None:
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
                    if user == standin.token:
                        return True
                self._send(HTTPStatus.UNAUTHORIZED, {"message": "Invalid API token"})
                return False

            def _dispatch(self, method: str) -> None:
                if not self._authorised():
                    return
                path = self.path.split("?", 1)[0].rstrip("/")
                standin.requests.append((method, path))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                with standin.lock:
                    status, response = standin._route(method, path, body)
                self._send(status, response)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

        return Handler

    def _route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST" and path == "/v1/experiments":
            return self.create_experiment(body)
        match = re.fullmatch(r"/v1/experiments/(\w+)(?:/(\w+))?(?:/(\w+))?", path)
        if not match or match.group(1) not in self.experiments:
            return HTTPStatus.NOT_FOUND, {"message": f"no such resource {path}"}
        experiment_id, resource, item = match.groups()
        routes = {
            ("GET", None): lambda: (HTTPStatus.OK, self._with_progress(self.experiments[experiment_id])),
            ("POST", "suggestions"): lambda: (HTTPStatus.OK, self.suggest(experiment_id, body)),
            ("DELETE", "suggestions"): lambda: self.delete_open_suggestions(experiment_id, item),
            ("POST", "observations"): lambda: self.observe(experiment_id, body),
            ("GET", "observations"): lambda: (HTTPStatus.OK, _page(self.observations[experiment_id])),
            ("GET", "best_assignments"): lambda: (HTTPStatus.OK, _page(self.best_assignments(experiment_id))),
        }
        route = routes.get((method, resource))
        return route() if route else (HTTPStatus.NOT_FOUND, {"message": f"{method} {path} is not served"})


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "pagination", "count": len(items), "data": items, "paging": {"before": None, "after": None}}


def _choice_name(value: Any) -> str:
    return value["name"] if isinstance(value, dict) else str(value)


def _parameter_problem(parameter: dict[str, Any]) -> str | None:
    """The checks SigOpt makes on a parameter definition."""
    if parameter.get("type") not in PARAMETER_TYPES:
        return f"parameter {parameter.get('name')}: type must be one of {PARAMETER_TYPES}"
    if parameter["type"] == "categorical":
        names = [_choice_name(c) for c in parameter.get("categorical_values") or []]
        return None if len(names) >= 2 and len(set(names)) == len(names) else "categorical needs 2+ distinct values"
    if parameter.get("grid"):
        return None
    bounds = parameter.get("bounds") or {}
    if not bounds.get("min", 0) < bounds.get("max", 0):
        return f"parameter {parameter['name']}: bounds need min < max"
    if parameter.get("transformation") == "log" and bounds["min"] <= 0:
        return f"parameter {parameter['name']}: log transformation needs min > 0"
    return None
