#!/usr/bin/env python3
"""Render every Kustomize overlay and validate what it renders; exit 1 on the first problem.

    python3 deploy/k8s/check.py          # needs kubectl (kustomize built in) and kubernetes-validate

Each overlay under deploy/k8s/overlays is rendered with `kubectl kustomize`, then:
- every built-in kind is validated against the Kubernetes OpenAPI schema by
  `kubernetes-validate --strict` (unknown and misspelt fields are errors);
- ServiceMonitor (monitoring.coreos.com/v1) is a CRD that kubernetes-validate has no schema for
  (it would only warn and pass), so it is taken out of that run and checked here instead: its
  selector must select the broker's Service, and its endpoint must name one of that Service's
  ports;
- the broker's pod keeps the locked-down security context and the probes the docs promise.
"""

import pathlib
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent
OVERLAYS = sorted(p for p in (ROOT / "overlays").iterdir() if p.is_dir())
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def render(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{overlay.name}: kubectl kustomize failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def validate_builtin(name, docs):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump_all(docs, f)
        f.flush()
        out = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", f.name],
            capture_output=True,
            text=True,
        )
    report = (out.stdout + out.stderr).strip()
    # Warnings ("couldn't find schema") would mean a kind slipped through unchecked.
    if out.returncode != 0 or "WARN" in report or "ERROR" in report:
        raise SystemExit(f"{name}: kubernetes-validate:\n{report}")


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, found {len(found)}")
    return found[0]


def check_service_monitor(name, monitor, service):
    spec = monitor.get("spec") or {}
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = service["metadata"].get("labels") or {}
    if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
        raise SystemExit(
            f"{name}: ServiceMonitor selector {wanted} does not select Service labels {labels}"
        )
    ports = {p.get("name") for p in service["spec"]["ports"]}
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        raise SystemExit(f"{name}: ServiceMonitor has no endpoints")
    for endpoint in endpoints:
        if endpoint.get("port") not in ports or not endpoint.get("path"):
            raise SystemExit(
                f"{name}: ServiceMonitor endpoint {endpoint} needs a path and one of the Service's ports {ports}"
            )


def check_pod(name, deployment):
    pod = deployment["spec"]["template"]["spec"]
    problems = []
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false")
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problems.append("pod securityContext.runAsNonRoot must be true")
    for c in pod["containers"]:
        sc = c.get("securityContext") or {}
        expected = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        }
        for key, value in expected.items():
            if sc.get(key) is not value:
                problems.append(f"{c['name']}: securityContext.{key} must be {value}")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{c['name']}: securityContext.capabilities.drop must be [ALL]")
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{c['name']}: seccompProfile must be RuntimeDefault")
        for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
            if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != path:
                problems.append(f"{c['name']}: {probe} must get {path}")
        if not (c.get("resources") or {}).get("limits", {}).get("memory"):
            problems.append(f"{c['name']}: needs a memory limit")
    if problems:
        raise SystemExit(f"{name}: " + "; ".join(problems))


def main():
    if not OVERLAYS:
        raise SystemExit("no overlays found")
    for overlay in OVERLAYS:
        name = f"overlays/{overlay.name}"
        docs = render(overlay)
        builtin = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_KINDS]
        validate_builtin(name, builtin)
        check_service_monitor(name, one(docs, "ServiceMonitor"), one(docs, "Service"))
        check_pod(name, one(docs, "Deployment"))
        kinds = ", ".join(sorted(d["kind"] for d in docs))
        print(f"{name}: valid ({kinds})")


if __name__ == "__main__":
    sys.exit(main())
