#!/usr/bin/env bash
# The end of up.sh: shows keymeter working. A plan "demo" allowing 3 requests per 10 s and a
# key on it (made once through the admin API, then reused), then checks of the key until the
# limiter refuses it, with the curl command to repeat.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

cd "$KM_ROOT"
km_settings
km_secrets quiet
limiter="http://$(km_client_addr "$KEYMETER_LIMITER_LISTEN")"
key=$(km_admin_key demo '[{"name":"per_10s","algorithm":"sliding_log","limit":3,"window_ms":10000}]' "$KM_STATE/demo.env")

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
		wait_ms=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("retry_after_ms", 1000))' <<<"$body")
		sleep "$(((wait_ms + 999) / 1000))"
	else
		km_die "unexpected answer from the limiter"
	fi
done
echo "  (the plan allows 3 per 10 s; the admin token is in $(km_rel "$KM_SECRETS_FILE"))"
