#!/usr/bin/env python3
"""Cross-checks the rendered Kubernetes manifests and the Grafana dashboard against the code.

Schemas say a manifest is well-formed; this says it fits keymeter: every KEYMETER_*
variable exists in the code, each container runs a real subcommand and exposes the port its
service listens on, probes hit /readyz and /healthz, the grace period covers the shutdown,
the Services, HPA, PDB and ServiceMonitor select what exists, and the dashboard's queries
parse and name metrics and labels the code records.

    crosscheck.py REPO_ROOT RENDER_DIR [--dashboard FILE]...

RENDER_DIR holds one `<name>.yaml` per rendered kustomization, named after its path under
deploy/k8s with `/` as `__` (overlays__production.yaml). Run by deploy/k8s/validate.sh,
with the PyYAML and promql-parser of its venv.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

SERVICES = ("key-admin", "limiter", "usage-ingest")
PROMETHEUS_LABELS = {"instance", "job", "namespace", "pod", "container", "endpoint"}


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []

    def fail(self, where: str, what: str) -> None:
        self.failures.append(f"{where}: {what}")

    def check(self, ok: bool, where: str, what: str) -> None:
        if not ok:
            self.fail(where, what)


# ----------------------------------------------------------------------- the code's facts
class Code:
    def __init__(self, root: Path) -> None:
        sources = [p for top in ("crates", "services") for p in (root / top).glob("*/src/**/*.rs")]
        text = {p: p.read_text(encoding="utf-8") for p in sources}
        everything = "\n".join(text.values())

        self.env_vars = set(re.findall(r'env\s*=\s*"(KEYMETER_[A-Z0-9_]+)"', everything))

        # metric name -> (kind, label names recorded with it); a macro call either records
        # at once or makes a handle kept for later (`let c = counter!(…);`, a struct field).
        # A handle's macro call ends with `;` or with `,` at the end of its line (a struct
        # field), so write such calls on one line.
        self.metrics: dict[str, tuple[str, set[str]]] = {}
        call = re.compile(
            r'metrics::(counter|gauge|histogram)!\(\s*"(keymeter_[a-z0-9_]+)"([^;]*?)\)\s*(?:\.(?:increment|set|record|decrement|absolute)|;|,[ \t]*$)',
            re.MULTILINE,
        )
        for kind, name, rest in call.findall(everything):
            labels = set(re.findall(r'"([a-z_]+)"\s*=>', rest))
            old = self.metrics.get(name, (kind, set()))[1]
            self.metrics[name] = (kind, old | labels)

        server = (root / "crates/service-kit/src/server.rs").read_text(encoding="utf-8")
        found = re.search(r"SHUTDOWN_GRACE_SECS:\s*u64\s*=\s*(\d+)", server)
        self.shutdown_grace = int(found.group(1)) if found else None

        # service -> (listen variable, default port, subcommands)
        self.services: dict[str, tuple[str, int, set[str]]] = {}
        for service in SERVICES:
            settings = (root / "services" / service / "src/settings.rs").read_text(encoding="utf-8")
            listen = re.search(r'env\s*=\s*"(KEYMETER_[A-Z_]+_LISTEN)",\s*default_value\s*=\s*"[^"]*:(\d+)"', settings)
            enum = re.search(r"pub enum Command \{(.*?)\n\}", settings, re.S)
            commands = set()
            if enum:
                for variant in re.findall(r"^    ([A-Z][A-Za-z]*)\b", enum.group(1), re.M):
                    commands.add(re.sub(r"(?<!^)([A-Z])", r"-\1", variant).lower())
            if listen:
                self.services[service] = (listen.group(1), int(listen.group(2)), commands)

    def series_labels(self, series: str) -> set[str] | None:
        """Labels of a series as Prometheus shows it, or None if the code records no such.

        metrics-exporter-prometheus renders a histogram whose name ends in `_seconds` with
        buckets (service-kit sets buckets for that suffix) and any other as a summary."""
        candidates = [(series, "")] + [
            (series[: -len(suffix)], suffix) for suffix in ("_bucket", "_sum", "_count") if series.endswith(suffix)
        ]
        for base, suffix in candidates:
            if base not in self.metrics:
                continue
            kind, labels = self.metrics[base]
            bucketed = kind == "histogram" and base.endswith("_seconds")
            if suffix and kind != "histogram":
                continue
            if suffix == "_bucket" and not bucketed:
                continue
            if kind == "histogram" and not suffix and bucketed:
                continue
            extra = {"service"}
            if suffix == "_bucket":
                extra.add("le")
            if kind == "histogram" and not suffix:
                extra.add("quantile")
            return labels | extra
        return None


# ------------------------------------------------------------------------------ manifests
def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def service_of(image: str) -> str | None:
    name = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    return name if name in SERVICES else None


def tag_of(image: str) -> str | None:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "digest"
    return last.split(":", 1)[1] if ":" in last else None


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_render(name: str, docs: list[dict], code: Code, example_secret_keys: set[str], r: Report) -> None:
    overlay = name.startswith("overlays__")
    production = name.startswith("overlays__production")
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    secrets = {
        d["metadata"]["name"]: set((d.get("data") or {}) | (d.get("stringData") or {}))
        for d in by_kind.get("Secret", [])
    }

    def known_var(var: str, where: str) -> None:
        if var.startswith("KEYMETER_"):
            r.check(var in code.env_vars, where, f"{var} is not a setting of any binary")

    for cm_name, data in configmaps.items():
        for key in data:
            known_var(key, f"{name} ConfigMap/{cm_name}")
    for s_name, keys in secrets.items():
        for key in keys:
            known_var(key, f"{name} Secret/{s_name}")

    workloads = by_kind.get("Deployment", []) + by_kind.get("Job", [])
    for w in workloads:
        where = f"{name} {w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]
        spec = pod["spec"]
        r.check(spec.get("securityContext", {}).get("runAsNonRoot") is True, where, "runAsNonRoot is not true")
        for c in spec["containers"]:
            cw = f"{where} container {c['name']}"
            image = c["image"]
            service = service_of(image)
            r.check(service is not None, cw, f"image {image} is not one of {SERVICES}")
            tag = tag_of(image)
            if overlay:
                r.check(tag is not None and tag != "latest", cw, f"image {image} has no pinned tag")
            if production:
                r.check(tag not in (None, "latest", "dev"), cw, f"production image {image} is not a release tag")
            sc = c.get("securityContext", {})
            r.check(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem is not true")
            r.check(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation is not false")
            r.check("ALL" in sc.get("capabilities", {}).get("drop", []), cw, "capabilities do not drop ALL")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    r.check(what in res.get(part, {}), cw, f"no {part}.{what}")

            env_names = [e["name"] for e in c.get("env", [])]
            for e in c.get("env", []):
                known_var(e["name"], cw)
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    r.check(ref["key"] == e["name"], cw, f"{e['name']} reads secret key {ref['key']}")
                    r.check(
                        ref["key"] in example_secret_keys,
                        cw,
                        f"secret key {ref['key']} is not documented in base/secrets.example.env",
                    )
                    if ref["name"] in secrets:
                        r.check(
                            ref["key"] in secrets[ref["name"]] or ref.get("optional") is True,
                            cw,
                            f"Secret/{ref['name']} has no key {ref['key']}",
                        )
                    elif overlay and not production:
                        r.fail(cw, f"Secret/{ref['name']} is not in the render")
            env_from_vars: dict[str, str] = {}
            for ef in c.get("envFrom", []):
                cm = ef.get("configMapRef", {}).get("name")
                if cm is not None:
                    r.check(cm in configmaps, cw, f"ConfigMap/{cm} is not in the render")
                    env_from_vars.update(configmaps.get(cm, {}))
            if service is None or service not in code.services:
                continue
            listen_var, default_port, commands = code.services[service]
            args = c.get("args") or []
            r.check(
                bool(args) and args[0] in commands,
                cw,
                f"args {args} do not start with a subcommand of {service} {sorted(commands)}",
            )
            if w["kind"] != "Deployment":
                continue
            # The serving container: port, listen address, probes, shutdown.
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            r.check(
                ports.get("http") == default_port,
                cw,
                f"port http is {ports.get('http')}, {service} listens on {default_port}",
            )
            listen = env_from_vars.get(listen_var)
            if listen_var in env_names:
                listen = next(e.get("value") for e in c["env"] if e["name"] == listen_var)
            r.check(listen is not None, cw, f"{listen_var} is not set (the binary would listen on 127.0.0.1)")
            if listen is not None:
                host, _, port = str(listen).rpartition(":")
                r.check(host in ("0.0.0.0", "[::]"), cw, f"{listen_var}={listen} is not every interface")
                r.check(port == str(ports.get("http")), cw, f"{listen_var}={listen} is not the http port")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                got = c.get(probe, {}).get("httpGet", {})
                r.check(
                    got.get("path") == path and got.get("port") in ("http", default_port),
                    cw,
                    f"{probe} is not GET {path} on the http port",
                )
            notes = pod.get("metadata", {}).get("annotations", {})
            r.check(
                notes.get("prometheus.io/scrape") == "true"
                and notes.get("prometheus.io/port") == str(default_port)
                and notes.get("prometheus.io/path") == "/metrics",
                cw,
                "prometheus.io annotations are wrong",
            )
            pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            r.check(len(pre) == 2 and pre[0] == "sleep", cw, "preStop is not a sleep")
            sleep = int(pre[1]) if len(pre) == 2 and pre[1].isdigit() else 0
            grace = spec.get("terminationGracePeriodSeconds", 30)
            # The limiter flushes usage after the server has drained: up to 10 s of retries.
            need = sleep + (code.shutdown_grace or 20) + (10 if service == "limiter" else 0)
            r.check(
                grace > need,
                cw,
                f"terminationGracePeriodSeconds {grace} does not exceed {need} s "
                f"(preStop {sleep} + server drain {code.shutdown_grace}"
                f"{' + usage flush 10' if service == 'limiter' else ''})",
            )

    deployments = by_kind.get("Deployment", [])
    for s in by_kind.get("Service", []):
        where = f"{name} Service/{s['metadata']['name']}"
        targets = [
            d
            for d in deployments
            if matches(s["spec"].get("selector", {}), d["spec"]["template"]["metadata"].get("labels", {}))
        ]
        r.check(len(targets) == 1, where, f"selects {len(targets)} Deployments")
        for d in targets:
            ports = {
                p.get("name"): p["containerPort"]
                for c in d["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort")
                r.check(tp in ports or tp in ports.values(), where, f"targetPort {tp} is not a container port")
                r.check(ports.get(tp) in (None, p["port"]), where, "port differs from the container port")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        where = f"{name} HorizontalPodAutoscaler/{h['metadata']['name']}"
        ref = h["spec"]["scaleTargetRef"]
        target = [d for d in deployments if d["metadata"]["name"] == ref["name"]]
        r.check(ref["kind"] == "Deployment" and len(target) == 1, where, f"scales {ref} which is not in the render")
        for d in target:
            r.check("replicas" not in d["spec"], where, "its Deployment also sets replicas (apply would fight the HPA)")
        if production:
            r.check(h["spec"].get("minReplicas", 1) >= 3, where, "production minReplicas is below 3")
    for p in by_kind.get("PodDisruptionBudget", []):
        where = f"{name} PodDisruptionBudget/{p['metadata']['name']}"
        sel = p["spec"]["selector"].get("matchLabels", {})
        r.check(
            any(matches(sel, d["spec"]["template"]["metadata"].get("labels", {})) for d in deployments),
            where,
            "selects no Deployment",
        )


def check_servicemonitors(monitoring: list[dict], services: list[dict], r: Report) -> None:
    for sm in (d for d in monitoring if d["kind"] == "ServiceMonitor"):
        where = f"monitoring ServiceMonitor/{sm['metadata']['name']}"
        sel = sm["spec"]["selector"].get("matchLabels", {})
        picked = [s for s in services if matches(sel, s["metadata"].get("labels", {}))]
        names = sorted(s["metadata"]["name"] for s in picked)
        r.check(names == sorted(SERVICES), where, f"selects Services {names}, not {sorted(SERVICES)}")
        for ep in sm["spec"]["endpoints"]:
            for s in picked:
                r.check(
                    ep.get("port") in {p.get("name") for p in s["spec"]["ports"]},
                    where,
                    f"port {ep.get('port')} is not a port of Service/{s['metadata']['name']}",
                )


# ------------------------------------------------------------------------------ dashboard
def check_dashboard(path: Path, code: Code, r: Report) -> int:
    import promql_parser

    where = str(path)
    board = json.loads(path.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    r.check(
        variables.get("DS_PROMETHEUS", {}).get("type") == "datasource", where, "no DS_PROMETHEUS data source variable"
    )
    panels = []

    def walk(items: list[dict]) -> None:
        for p in items:
            panels.append(p)
            walk(p.get("panels", []))

    walk(board.get("panels", []))
    ids = [p["id"] for p in panels]
    r.check(len(ids) == len(set(ids)), where, "panel ids are not unique")
    queries = 0
    for p in panels:
        if p.get("type") == "row":
            continue
        pw = f"{where} panel {p['id']} '{p.get('title')}'"
        r.check(p.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", pw, "data source is not ${DS_PROMETHEUS}")
        for t in p.get("targets", []):
            queries += 1
            expr = t["expr"]
            concrete = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
            try:
                promql_parser.parse(concrete)
            except Exception as error:  # noqa: BLE001 - the parser raises plain exceptions
                r.fail(pw, f"query does not parse ({error}): {expr}")
                continue
            used: set[str] = set()
            for series in set(re.findall(r"\b(keymeter_[a-z0-9_]+)", expr)):
                labels = code.series_labels(series)
                if labels is None:
                    r.fail(pw, f"metric {series} is recorded nowhere in the code")
                    continue
                used |= labels
                for selector in re.findall(rf"\b{series}\{{([^}}]*)\}}", expr):
                    for label in re.findall(r"([a-zA-Z_]+)\s*(?:=~|!~|!=|=)", selector):
                        r.check(label in labels, pw, f"{series} has no label {label}")
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
                for label in (x.strip() for x in group.split(",") if x.strip()):
                    r.check(label in used or label in PROMETHEUS_LABELS, pw, f"groups by unknown label {label}")
    return queries


def main(argv: list[str]) -> int:
    root, render_dir = Path(argv[1]), Path(argv[2])
    dashboards = [Path(argv[i + 1]) for i, a in enumerate(argv) if a == "--dashboard"]
    code = Code(root)
    r = Report()
    r.check(len(code.services) == len(SERVICES), "code", f"listen settings found only for {sorted(code.services)}")
    r.check(code.shutdown_grace is not None, "code", "SHUTDOWN_GRACE_SECS not found in service-kit server.rs")
    example = (root / "deploy/k8s/base/secrets.example.env").read_text(encoding="utf-8")
    example_keys = set(re.findall(r"^(KEYMETER_[A-Z0-9_]+)=", example, re.M))
    for key in example_keys:
        r.check(key in code.env_vars, "base/secrets.example.env", f"{key} is not a setting of any binary")

    renders = sorted(render_dir.glob("*.yaml"))
    objects = 0
    for path in renders:
        docs = load(path)
        objects += len(docs)
        check_render(path.stem, docs, code, example_keys, r)
    monitoring = render_dir / "monitoring.yaml"
    production = render_dir / "overlays__production.yaml"
    if monitoring.exists() and production.exists():
        check_servicemonitors(load(monitoring), [d for d in load(production) if d["kind"] == "Service"], r)
    queries = sum(check_dashboard(d, code, r) for d in dashboards)

    for note in r.notes:
        print(f"note  {note}")
    for failure in r.failures:
        print(f"FAIL  {failure}")
    if r.failures:
        return 1
    print(
        f"ok    cross-checks: {len(renders)} renders ({objects} objects), {queries} dashboard queries, "
        f"{len(code.env_vars)} KEYMETER_* settings and {len(code.metrics)} metrics read from the code"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
