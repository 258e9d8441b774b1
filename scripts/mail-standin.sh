#!/usr/bin/env bash
# The mail stand-in used by the tests and the demo: mailu-sim (Mailu API v1 + the auth callback
# + a relay sink) and a real Dovecot from Debian on loopback whose Lua passdb asks mailu-sim, with
# TLS from a throw-away CA. One instance serves any number of tenant domains.
#   scripts/mail-standin.sh start DIR   # writes DIR/standin.env (API_URL, SMTP_PORT, CA_FILE, …)
#   scripts/mail-standin.sh stop DIR
# MAILU_SIM names the simulator binary (default target/debug/mailu-sim); MAILU_TOKEN its token.
# The API is served over http (API_URL; Dovecot's Lua and the /_sim/* controls use it) and, with the
# same state, over https as a real Mailu serves it (API_HTTPS_URL), with a leaf that also names
# mail.standin.example: a name that does not resolve, for tests that reach it pinned to 127.0.0.1.
# MAILU_REALISTIC=1 (the benchmark) makes it cost what a real Mailu costs: mailu-sim hashes
# passwords as slowly as Mailu's bcrypt (CREDENTIAL_ROUNDS=12) and Dovecot keeps its default
# auth_failure_delay of 2 s, as Mailu's front does (../shared/reference/mail-standin.md). Tests
# leave it off: every refused login would wait 2 s more and every password set or uncached login
# would take a quarter second of CPU, for behaviour that is otherwise the same.
set -euo pipefail
cmd=${1:?start|stop}
dir=$(mkdir -p "${2:?directory}" && cd "$2" && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ "$cmd" = stop ]; then
  [ -f "$dir/standin.env" ] || exit 0
  # shellcheck disable=SC1091
  source "$dir/standin.env"
  doveadm -c "$dir/dovecot.conf" stop >/dev/null 2>&1 || kill "$DOVECOT_PID" 2>/dev/null || true
  kill "$SIM_PID" 2>/dev/null || true
  exit 0
fi

sim=${MAILU_SIM:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/mailu-sim}
token=${MAILU_TOKEN:-sim-token-1234}
chmod 755 "$dir"

realistic=${MAILU_REALISTIC:-0}
sim_flags=()
failure_delay=0
if [ "$realistic" = 1 ]; then
  sim_flags=(--realistic)
  failure_delay="2 s"
fi

# TLS: a CA and a leaf for localhost / 127.0.0.1 / mail.standin.example.
if [ ! -f "$dir/cert.pem" ]; then
  (cd "$dir"
   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 30 \
     -subj "/CN=smtp-vault stand-in CA" 2>/dev/null
   printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:mail.standin.example,IP:127.0.0.1\n' > leaf.ext
   openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out leaf.csr -subj "/CN=localhost" 2>/dev/null
   openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 30 -extfile leaf.ext 2>/dev/null)
fi

"$sim" --token "$token" --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" "${sim_flags[@]}" \
  > "$dir/sim.out" 2>"$dir/sim.err" &
sim_pid=$!
for _ in $(seq 1 200); do [ "$(wc -l < "$dir/sim.out")" -ge 3 ] && break; sleep 0.05; done
api_port=$(sed -n 's/^api_port=//p' "$dir/sim.out")
relay_port=$(sed -n 's/^relay_port=//p' "$dir/sim.out")
api_https_port=$(sed -n 's/^api_https_port=//p' "$dir/sim.out")
[ -n "$api_https_port" ] || { kill "$sim_pid"; echo "mailu-sim did not start" >&2; cat "$dir/sim.err" >&2; exit 1; }

cat > "$dir/passdb.lua" <<LUA
local http_client
function script_init()
  http_client = dovecot.http.client({timeout = 2000; max_attempts = 1})
  return 0
end
function script_deinit()
end
local function enc(s)
  return (string.gsub(s or "", "[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
function auth_password_verify(req, pass)
  local r = http_client:request({url = "http://127.0.0.1:$api_port/internal/auth/email"})
  r:add_header("Auth-User", enc(req.user))
  r:add_header("Auth-Pass", enc(pass))
  r:add_header("Auth-Protocol", req.service or "")
  r:add_header("Auth-Port", tostring(req.local_port))
  r:add_header("Client-Ip", enc(req.remote_ip))
  local res = r:submit()
  if res:status() == 200 then
    if res:header("Auth-Status") == "OK" then
      return dovecot.auth.PASSDB_RESULT_OK, ""
    end
    -- Mailu 2.0's nginx front gives the client Auth-Error-Code, so a rate limit (451) stays a
    -- temporary failure; Dovecot's nearest is 454. mailu-sim says Sim-Front only as 2.0.
    if res:header("Sim-Front") == "nginx" and string.sub(res:header("Auth-Error-Code") or "", 1, 1) == "4" then
      return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, ""
    end
    -- Mailu 2024.06's Dovecot front (core/nginx/dovecot/login.lua): any other status is a mismatch.
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, ""
  end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, ""
end
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, ""
end
LUA

smtp_port=$(free_port); tls_port=$(free_port)
cat > "$dir/dovecot.conf" <<CONF
instance_name = smtpv-$smtp_port
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = submission
listen = 127.0.0.1
ssl = yes
ssl_cert = <$dir/cert.pem
ssl_key = <$dir/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
auth_failure_delay = $failure_delay
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
mail_uid = nobody
mail_gid = nogroup
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
passdb {
  driver = lua
  args = file=$dir/passdb.lua blocking=yes
}
userdb {
  driver = static
  args = home=$dir/home/%d/%n
}
mail_location = maildir:~/Maildir
submission_relay_host = 127.0.0.1
submission_relay_port = $relay_port
submission_relay_trusted = yes
submission_relay_ssl = no
service submission-login {
  chroot =
  inet_listener submission {
    port = $smtp_port
  }
  inet_listener submissions {
    port = $tls_port
    ssl = yes
  }
}
CONF

dovecot -F -c "$dir/dovecot.conf" >/dev/null 2>&1 &
dovecot_pid=$!
for _ in $(seq 1 400); do
  (exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null && break
  sleep 0.05
done
(exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null || { kill "$sim_pid" "$dovecot_pid"; cat "$dir/dovecot.log" >&2; exit 1; }

cat > "$dir/standin.env" <<ENV
API_URL=http://127.0.0.1:$api_port/api/v1
API_PORT=$api_port
API_HTTPS_PORT=$api_https_port
API_HTTPS_URL=https://localhost:$api_https_port/api/v1
API_TOKEN=$token
SMTP_PORT=$smtp_port
SMTPS_PORT=$tls_port
CA_FILE=$dir/ca.pem
SIM_PID=$sim_pid
DOVECOT_PID=$dovecot_pid
ENV
echo "$dir/standin.env"
