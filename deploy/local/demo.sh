#!/usr/bin/env bash
# The end of up.sh: shows keymeter working. Makes (once) a plan "demo" allowing 3 requests per
# 10 s and a key on it through the admin API, then checks the key until the limiter refuses
# it, printing the curl commands to repeat. Idempotent: the plan is found by name and the
# demo key (kept in the stack's state folder, never in the repository) is reused.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

cd "$KM_ROOT"
km_settings
km_secrets quiet
km_need_cmd python3 python3-minimal

admin="http://$(km_client_addr "$KEYMETER_ADMIN_LISTEN")"
limiter="http://$(km_client_addr "$KEYMETER_LIMITER_LISTEN")"
auth="Authorization: Bearer $KEYMETER_BOOTSTRAP_ADMIN_TOKEN"
demo_file="$KM_STATE/demo.env"

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1"; }

# The bootstrap token is stored by key-admin in the background: wait until it works.
km_wait 15 curl -fsS -o /dev/null -H "$auth" "$admin/v1/plans?limit=1" ||
	km_die "the admin API does not accept the bootstrap token (see $(km_rel "$KM_LOGS/key-admin.log"))"

plan_id=$(curl -fsS -H "$auth" "$admin/v1/plans?limit=100" |
	python3 -c 'import json,sys; print(next((p["id"] for p in json.load(sys.stdin)["items"] if p["name"] == "demo"), ""))')
if [[ -z $plan_id ]]; then
	plan_id=$(curl -fsS -H "$auth" -H 'content-type: application/json' "$admin/v1/plans" \
		-d '{"name":"demo","limits":[{"name":"per_10s","algorithm":"sliding_log","limit":3,"window_ms":10000}]}' |
		json_field id)
	km_log "demo: created plan demo ($plan_id): 3 requests per 10 s"
fi

key=""
[[ -f $demo_file ]] && key=$(sed -n 's/^DEMO_KEY=//p' "$demo_file")
code=""
[[ -n $key ]] && code=$(curl -sS -H "x-api-key: $key" -H 'x-keymeter-cost: 0' "$limiter/v1/authorize" -o /dev/null -w '%{http_code}')
if [[ -z $key || $code == 401 ]]; then
	key=$(curl -fsS -H "$auth" -H 'content-type: application/json' "$admin/v1/keys" \
		-d "{\"plan_id\":\"$plan_id\",\"name\":\"demo\",\"owner_id\":\"demo\",\"prefix\":\"demo\"}" | json_field key)
	(umask 077 && printf 'DEMO_KEY=%s\n' "$key" >"$demo_file")
	km_log "demo: created a demo key (kept in $(km_rel "$demo_file"))"
fi

# The relay projects a new key into Redis within a moment.
km_wait 10 bash -c "[[ \$(curl -sS -o /dev/null -w '%{http_code}' -H 'x-api-key: $key' -H 'x-keymeter-cost: 0' '$limiter/v1/authorize') == 200 ]]" ||
	km_die "the limiter does not know the demo key yet (see $(km_rel "$KM_LOGS/limiter.log"))"

km_log "demo: checking the demo key until it is refused:"
echo "  curl -s -X POST $limiter/v1/check -H 'content-type: application/json' -d '{\"key\":\"$key\"}'"
passed=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
	answer=$(curl -sS -X POST "$limiter/v1/check" -H 'content-type: application/json' -d "{\"key\":\"$key\"}" -w ' %{http_code}')
	status=${answer##* }
	body=${answer% *}
	echo "  check $attempt -> $status $body"
	if [[ $status == 200 ]]; then
		passed=1
	elif [[ $status == 429 && $passed == 1 ]]; then
		break
	elif [[ $status == 429 ]]; then
		# A run moments ago used the window up: wait until it lets a request through.
		wait_ms=$(json_field retry_after_ms <<<"$body")
		sleep "$(( (${wait_ms:-1000} + 999) / 1000 ))"
	else
		km_die "unexpected answer from the limiter"
	fi
done
echo "  (the plan allows 3 per 10 s; list keys with: curl -s -H 'Authorization: Bearer <token from $(km_rel "$KM_SECRETS_FILE")>' $admin/v1/keys)"
