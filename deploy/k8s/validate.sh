#!/usr/bin/env bash
# Checks everything under deploy/ that can be checked without a cluster or a Docker engine:
#
#   1. yamllint --strict      deploy/**/*.yaml, docker-compose.yml, .yamllint (rules: .yamllint)
#   2. check-jsonschema       docker-compose.yml against the Compose Specification schema
#   3. hadolint               deploy/docker/Dockerfile
#   4. json.tool              deploy/grafana/*.json parse
#   5. kubectl kustomize      every kustomization under deploy/k8s renders
#   6. kubernetes-validate    every rendered object, --strict, against each of K8S_VERSIONS.
#                             Custom resources (the ServiceMonitor of deploy/k8s/monitoring)
#                             have no schema there: they are listed as skipped; any other
#                             object without a schema fails (a mistyped kind or apiVersion).
#   7. crosscheck.py          the renders and the dashboard against the code (settings,
#                             subcommands, ports, probes, grace periods, metric names)
#
# The Python tools live in a venv, .local/validate-venv, installed from the pinned
# deploy/k8s/validate-requirements.txt on the first run and again only when that file
# changes; PyPI is needed then, nothing afterwards. Steps 5-7 need kubectl (or kustomize)
# and are skipped, saying so, where neither is installed.
#
# Usage: deploy/k8s/validate.sh            (from anywhere; exits non-zero on any failure)
# Environment: K8S_VERSIONS (default below), VALIDATE_VENV (default .local/validate-venv).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

# The Kubernetes versions the manifests are validated against, each one that
# kubernetes-validate 1.37.0 ships (1.25-1.37; its default is its newest, 1.37.0): the
# oldest minor this repository claims to support, and the newest known.
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
VENV=${VALIDATE_VENV:-$ROOT/.local/validate-venv}
REQUIREMENTS=deploy/k8s/validate-requirements.txt

# Every kustomization, as a path under deploy/k8s.
KUSTOMIZATIONS=(
	base
	jobs/migrate
	overlays/dev
	overlays/dev/migrate
	overlays/production
	overlays/production/migrate
	monitoring
)
# Custom resources expected in the renders (kind@apiVersion): kubernetes-validate has no
# schema for them, so they are rendered and linted but not schema-checked.
CUSTOM_RESOURCES=("ServiceMonitor@monitoring.coreos.com/v1")

failures=0
plural() { if (($1 == 1)); then echo "1 $2"; else echo "$1 $2s"; fi; }
step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok    %s\n' "$*"; }
skip() { printf 'skip  %s\n' "$*"; }
fail() {
	printf 'FAIL  %s\n' "$*"
	failures=$((failures + 1))
}

# ------------------------------------------------------------------------------ tools
step "tools"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ -x $VENV/bin/python && -f $stamp && $(<"$stamp") == "$want" ]]; then
	ok "venv $VENV is up to date with $REQUIREMENTS"
else
	echo "installing $REQUIREMENTS into $VENV"
	if [[ -e $VENV ]]; then
		[[ -f $VENV/pyvenv.cfg ]] || { echo "$VENV exists and is not a venv; not touching it" >&2; exit 1; }
		rm -rf "$VENV"
	fi
	python3 -m venv "$VENV"
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
		--requirement "$REQUIREMENTS"
	echo "$want" >"$stamp"
	ok "venv $VENV installed"
fi
BIN=$VENV/bin
echo "kubernetes-validate $("$BIN/kubernetes-validate" --version), $("$BIN/yamllint" --version)," \
	"check-jsonschema $("$BIN/python" -c 'import importlib.metadata as m; print(m.version("check-jsonschema"))')," \
	"$("$BIN/hadolint" --version)"

KUSTOMIZE=()
if command -v kubectl >/dev/null 2>&1; then
	KUSTOMIZE=(kubectl kustomize)
	echo "kustomize: $(kubectl version --client 2>/dev/null | paste -sd, - | sed 's/,/, /g')"
elif command -v kustomize >/dev/null 2>&1; then
	KUSTOMIZE=(kustomize build)
	echo "kustomize: $(kustomize version 2>/dev/null)"
fi

# ------------------------------------------------------------------------- 1. yamllint
step "yamllint --strict (config .yamllint)"
mapfile -t yaml_files < <(find deploy -path '*/node_modules' -prune -o -type f \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
yaml_files+=(docker-compose.yml .yamllint)
if "$BIN/yamllint" --strict --config-file .yamllint "${yaml_files[@]}"; then
	ok "${#yaml_files[@]} YAML files"
else
	fail "yamllint"
fi

# ---------------------------------------------------------------- 2. compose schema
step "docker-compose.yml against the Compose Specification"
if "$BIN/check-jsonschema" --quiet --builtin-schema vendor.compose-spec docker-compose.yml; then
	ok "docker-compose.yml"
else
	fail "docker-compose.yml does not match the Compose Specification"
fi

# ---------------------------------------------------------------------- 3. hadolint
step "hadolint"
if "$BIN/hadolint" --no-color deploy/docker/Dockerfile; then
	ok "deploy/docker/Dockerfile"
else
	fail "hadolint deploy/docker/Dockerfile"
fi

# ---------------------------------------------------------------- 4. Grafana JSON
step "Grafana dashboards parse"
dashboards=(deploy/grafana/*.json)
for f in "${dashboards[@]}"; do
	if "$BIN/python" -m json.tool "$f" >/dev/null; then ok "$f"; else fail "$f is not JSON"; fi
done

if ((${#KUSTOMIZE[@]} == 0)); then
	step "kustomize render, schema validation, cross-checks"
	skip "SKIPPED: neither kubectl nor kustomize is installed, so the kustomizations were" \
		"not rendered, not validated against the Kubernetes schemas and not cross-checked"
else
	render_dir=$(mktemp -d)
	trap 'rm -rf "$render_dir"' EXIT

	# ------------------------------------------------------------------ 5. render
	step "render (${KUSTOMIZE[*]})"
	rendered=()
	for k in "${KUSTOMIZATIONS[@]}"; do
		out=$render_dir/${k//\//__}.yaml
		if "${KUSTOMIZE[@]}" "deploy/k8s/$k" >"$out"; then
			count=$(grep -c '^kind: ' "$out" || true)
			ok "deploy/k8s/$k: $(plural "$count" object)"
			rendered+=("$k")
		else
			fail "deploy/k8s/$k does not render"
			rm -f "$out"
		fi
	done

	# ---------------------------------------------------------- 6. schema check
	step "kubernetes-validate --strict, Kubernetes $K8S_VERSIONS"
	for k in "${rendered[@]}"; do
		out=$render_dir/${k//\//__}.yaml
		for version in $K8S_VERSIONS; do
			rc=0
			result=$("$BIN/kubernetes-validate" --strict --kubernetes-version "$version" "$out" 2>&1) || rc=$?
			passed=$(grep -c '^INFO ' <<<"$result" || true)
			skipped=0
			bad=0
			while IFS= read -r line; do
				[[ -z $line || $line == INFO\ * ]] && continue
				known=0
				for custom in "${CUSTOM_RESOURCES[@]}"; do
					if [[ $line == WARN\ *"Couldn't find schema for kind ${custom%@*} with api version ${custom#*@} "* ]]; then
						known=1
					fi
				done
				if ((known)); then
					skipped=$((skipped + 1))
					skip "deploy/k8s/$k (Kubernetes $version): ${line#* * } - a custom resource" \
						"(Prometheus Operator CRD); kubernetes-validate ships no schema for it, so it" \
						"is rendered and yamllinted only"
				else
					bad=$((bad + 1))
					fail "deploy/k8s/$k (Kubernetes $version): ${line/$out/<render>}"
				fi
			done <<<"$result"
			if ((rc != 0 && bad == 0)); then
				fail "deploy/k8s/$k (Kubernetes $version): kubernetes-validate exited $rc"
			elif ((bad == 0)); then
				message="deploy/k8s/$k: $(plural "$passed" object) valid against Kubernetes $version"
				((skipped == 0)) || message+=" ($(plural "$skipped" "custom resource") skipped)"
				ok "$message"
			fi
		done
	done

	# -------------------------------------------------------------- 7. cross-check
	step "cross-check against the code"
	dashboard_args=()
	for f in "${dashboards[@]}"; do dashboard_args+=(--dashboard "$f"); done
	if ! "$BIN/python" deploy/k8s/crosscheck.py "$ROOT" "$render_dir" "${dashboard_args[@]}"; then
		fail "cross-checks"
	fi
fi

echo
if ((failures)); then
	echo "deploy/k8s/validate.sh: $failures check(s) FAILED"
	exit 1
fi
echo "deploy/k8s/validate.sh: OK"
