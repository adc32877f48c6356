#!/usr/bin/env bash
# Runs a command beside private, throwaway test servers: Redis (no persistence), a RabbitMQ node and s3rver, each
# on free loopback ports with its own directory, so several runs can go on at once on one machine.
#
#   bash scripts/test_servers.sh deno test -A adapters/
#
# Exports to the command:
#   TEST_REDIS_URL, TEST_REDIS_PORT, TEST_REDIS_START (a script that starts Redis again after a stop),
#   TEST_RABBITMQ_URL, TEST_RABBITMQ_PORT, TEST_RABBITMQ_NODE,
#   TEST_RABBITMQ_CTL (e.g. `$TEST_RABBITMQ_CTL close_all_connections why`), TEST_RABBITMQ_START (starts the node again
#   after `$TEST_RABBITMQ_CTL shutdown`; waits until it is up),
#   TEST_S3_ENDPOINT, TEST_S3_REGION, TEST_S3_ACCESS_KEY_ID, TEST_S3_SECRET_ACCESS_KEY, TEST_SERVERS_DIR,
#   TEST_REDIS_STOP (stops Redis keeping its data; waits until its port is closed), TEST_REDIS_RESUME (starts it
#   again with that data, which is then forgotten: a later TEST_REDIS_START still starts empty),
#   TEST_S3_STOP (stops s3rver; waits until its port is closed), TEST_S3_START (starts it again on the same port
#   and folder, so every object is still there; waits until it answers).
# Everything is stopped and removed when the command ends (or on Ctrl-C); the script exits with the command's code.
# KEEP_TEST_SERVERS_DIR=1 keeps the directory (logs) for a look afterwards.
set -uo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: bash scripts/test_servers.sh <command...>" >&2
  exit 2
fi

for tool in deno redis-server redis-cli rabbitmq-server rabbitmqctl curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "test_servers: '$tool' not found (apt-get install -y --no-install-recommends redis-server rabbitmq-server curl)" >&2
    exit 2
  fi
done

log() { echo "test_servers: $*" >&2; }

# The servers and their tools must not read the caller's stdin (erl does): keep it on fd 3 for the command.
exec 3<&0 </dev/null

DIR="$(mktemp -d "${TMPDIR:-/tmp}/vmp3-test-servers.XXXXXX")"
chmod 755 "$DIR"
ID="$(basename "$DIR" | sed 's/.*\.//' | tr 'A-Z' 'a-z')-$$"

S3_PID=""
RABBIT_STARTED=""
RABBIT_NODE="vmp3-${ID}@localhost"
CLEANED=""

rabbitctl() {
  rabbitmqctl -n "$RABBIT_NODE" "$@"
}

cleanup() {
  [[ -n "$CLEANED" ]] && return
  CLEANED=1
  local pids=()
  if [[ -n "$RABBIT_STARTED" ]]; then
    (
      # Its data is thrown away, so no graceful stop is needed: SIGKILL the node (its helper processes follow).
      pid="$(cat "$DIR/rabbitmq/pid" 2>/dev/null || true)"
      if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      else
        timeout 30 rabbitmqctl -n "$RABBIT_NODE" -q shutdown >/dev/null 2>&1
      fi
    ) &
    pids+=($!)
  fi
  if [[ -n "${REDIS_PORT:-}" ]]; then
    (
      if ! timeout 10 redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1; then
        pid="$(cat "$DIR/redis/redis.pid" 2>/dev/null || true)"
        [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
      fi
    ) &
    pids+=($!)
  fi
  # An s3rver started again by TEST_S3_START is not $S3_PID: its pid is in the file.
  local s3_again
  s3_again="$(cat "$DIR/s3rver.pid" 2>/dev/null || true)"
  if [[ -n "$s3_again" && "$s3_again" != "$S3_PID" ]]; then
    kill "$s3_again" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$s3_again" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$s3_again" 2>/dev/null
  fi
  if [[ -n "$S3_PID" ]]; then
    kill "$S3_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$S3_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$S3_PID" 2>/dev/null
  fi
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  if [[ -n "${KEEP_TEST_SERVERS_DIR:-}" ]]; then
    log "kept $DIR"
  else
    rm -rf "$DIR"
  fi
}

on_exit() {
  local rc=$?
  cleanup
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Five distinct free ports below the ephemeral range (so an outgoing connection cannot take one meanwhile),
# each held open until all are chosen.
PORTS="$(
  cd "$DIR" && deno eval --no-config --no-lock '
  const held = [];
  while (held.length < 5) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    try {
      held.push(Deno.listen({ hostname: "127.0.0.1", port }));
    } catch { /* taken: try another */ }
  }
  console.log(held.map((l) => l.addr.port).join(" "));
  for (const l of held) l.close();
'
)" || { log "could not pick ports"; exit 1; }
read -r REDIS_PORT RABBIT_PORT RABBIT_DIST_PORT S3_PORT _SPARE <<<"$PORTS"

# --- Redis ---
mkdir -p "$DIR/redis"
cat >"$DIR/redis-start.sh" <<EOF
#!/usr/bin/env bash
# Starts this run's Redis again (empty), and waits until it answers.
redis-server --port $REDIS_PORT --bind 127.0.0.1 --daemonize yes --dir "$DIR/redis" --pidfile "$DIR/redis/redis.pid" \\
  --logfile "$DIR/redis/redis.log" --save '' --appendonly no >/dev/null || exit 1
for _ in \$(seq 1 100); do
  [[ "\$(redis-cli -p $REDIS_PORT ping 2>/dev/null)" == PONG ]] && exit 0
  sleep 0.05
done
echo "redis on port $REDIS_PORT did not answer; see $DIR/redis/redis.log" >&2
exit 1
EOF
chmod +x "$DIR/redis-start.sh"
cat >"$DIR/redis-stop.sh" <<EOF
#!/usr/bin/env bash
# Stops this run's Redis, saving its data for redis-resume.sh, and waits until its port is closed.
redis-cli -p $REDIS_PORT shutdown save >/dev/null 2>&1
for _ in \$(seq 1 100); do
  redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 || exit 0
  sleep 0.05
done
echo "redis on port $REDIS_PORT did not stop" >&2
exit 1
EOF
cat >"$DIR/redis-resume.sh" <<EOF
#!/usr/bin/env bash
# Starts this run's Redis again with the data redis-stop.sh saved, then forgets that data, so that a later
# redis-start.sh still starts empty.
"$DIR/redis-start.sh" || exit 1
rm -f "$DIR/redis/dump.rdb"
EOF
chmod +x "$DIR/redis-stop.sh" "$DIR/redis-resume.sh"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$DIR/redis" \
  --pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis/redis.log" --save '' --appendonly no >/dev/null 3<&- ||
  { log "redis-server failed to start"; exit 1; }

# --- RabbitMQ (its directories must belong to user rabbitmq: the Debian wrapper switches to it) ---
mkdir -p "$DIR/rabbitmq/mnesia" "$DIR/rabbitmq/log"
echo "[]." >"$DIR/rabbitmq/enabled_plugins"
cat >"$DIR/rabbitmq-start.sh" <<EOF
#!/usr/bin/env bash
# Starts this run's RabbitMQ node again (its data is kept), and waits until it is up.
RABBITMQ_NODENAME="$RABBIT_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$RABBIT_PORT \\
  RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT RABBITMQ_MNESIA_BASE="$DIR/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$DIR/rabbitmq/log" \\
  RABBITMQ_PID_FILE="$DIR/rabbitmq/pid" RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbitmq/enabled_plugins" \\
  rabbitmq-server -detached >>"$DIR/rabbitmq/start.log" 2>&1 || exit 1
[[ "\${1:-}" == --no-wait ]] && exit 0
deadline=\$((SECONDS + 90))
until rabbitmqctl -n "$RABBIT_NODE" -q await_startup --timeout 60 >/dev/null 2>&1; do
  if ((SECONDS > deadline)); then
    echo "rabbitmq node $RABBIT_NODE did not start; see $DIR/rabbitmq/log" >&2
    exit 1
  fi
  sleep 0.5
done
EOF
chmod +x "$DIR/rabbitmq-start.sh"
chown -R rabbitmq:rabbitmq "$DIR/rabbitmq" 2>/dev/null ||
  { [[ "$(id -u)" -eq 0 ]] && { log "cannot chown $DIR/rabbitmq to user rabbitmq"; exit 1; }; }
RABBIT_STARTED=1
"$DIR/rabbitmq-start.sh" --no-wait 3<&- || { log "rabbitmq-server failed to start; see $DIR/rabbitmq"; exit 1; }

# --- s3rver (run outside the workspace so it neither reads its config nor touches its lock file) ---
mkdir -p "$DIR/s3"
(cd "$DIR" && exec deno run -A --no-config --no-lock npm:s3rver@3.7.1 -d "$DIR/s3" -a 127.0.0.1 -p "$S3_PORT" \
  --silent >"$DIR/s3rver.log" 2>&1 3<&-) &
S3_PID=$!
echo "$S3_PID" >"$DIR/s3rver.pid"

# Stopping and starting s3rver again (same port, same folder: the objects stay), for fault tests.
cat >"$DIR/s3-stop.sh" <<EOF
#!/usr/bin/env bash
# Stops this run's s3rver, and waits until its port is closed.
pid="\$(cat "$DIR/s3rver.pid" 2>/dev/null || true)"
[[ -n "\$pid" ]] && kill "\$pid" 2>/dev/null
for _ in \$(seq 1 100); do
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$S3_PORT/" || exit 0
  sleep 0.05
done
[[ -n "\$pid" ]] && kill -9 "\$pid" 2>/dev/null
sleep 0.2
curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$S3_PORT/" && { echo "s3rver on port $S3_PORT did not stop" >&2; exit 1; }
exit 0
EOF
cat >"$DIR/s3-start.sh" <<EOF
#!/usr/bin/env bash
# Starts this run's s3rver again on the same port and folder, and waits until it answers.
cd "$DIR" || exit 1
setsid deno run -A --no-config --no-lock npm:s3rver@3.7.1 -d "$DIR/s3" -a 127.0.0.1 -p $S3_PORT --silent \\
  >>"$DIR/s3rver.log" 2>&1 </dev/null &
echo \$! >"$DIR/s3rver.pid"
for _ in \$(seq 1 600); do
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$S3_PORT/" && exit 0
  sleep 0.05
done
echo "s3rver on port $S3_PORT did not answer; see $DIR/s3rver.log" >&2
exit 1
EOF
chmod +x "$DIR/s3-stop.sh" "$DIR/s3-start.sh"

# --- wait for all three ---
ok=""
for _ in $(seq 1 100); do
  if [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; then ok=1; break; fi
  sleep 0.05
done
[[ -n "$ok" ]] || { log "redis did not answer; $(tail -5 "$DIR/redis/redis.log" 2>/dev/null)"; exit 1; }

ok=""
for _ in $(seq 1 600); do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$S3_PORT/"; then ok=1; break; fi
  kill -0 "$S3_PID" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$ok" ]] || { log "s3rver did not answer; $(tail -5 "$DIR/s3rver.log" 2>/dev/null)"; exit 1; }

deadline=$((SECONDS + 90))
until rabbitctl -q await_startup --timeout 60 >/dev/null 2>&1; do
  if ((SECONDS > deadline)); then
    log "rabbitmq did not start; $(tail -5 "$DIR/rabbitmq/start.log" 2>/dev/null)"
    exit 1
  fi
  sleep 0.5
done

export TEST_SERVERS_DIR="$DIR"
export TEST_REDIS_PORT="$REDIS_PORT"
export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export TEST_REDIS_START="$DIR/redis-start.sh"
export TEST_REDIS_STOP="$DIR/redis-stop.sh"
export TEST_REDIS_RESUME="$DIR/redis-resume.sh"
export TEST_RABBITMQ_PORT="$RABBIT_PORT"
export TEST_RABBITMQ_URL="amqp://guest:guest@127.0.0.1:$RABBIT_PORT"
export TEST_RABBITMQ_NODE="$RABBIT_NODE"
export TEST_RABBITMQ_CTL="rabbitmqctl -n $RABBIT_NODE"
export TEST_RABBITMQ_START="$DIR/rabbitmq-start.sh"
export TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export TEST_S3_STOP="$DIR/s3-stop.sh"
export TEST_S3_START="$DIR/s3-start.sh"
export TEST_S3_REGION="us-east-1"
export TEST_S3_ACCESS_KEY_ID="S3RVER"
export TEST_S3_SECRET_ACCESS_KEY="S3RVER"

log "redis $TEST_REDIS_URL, rabbitmq $TEST_RABBITMQ_URL (node $RABBIT_NODE), s3rver $TEST_S3_ENDPOINT, dir $DIR"

# In the background with `wait`, so a signal to this script is handled at once (and passed on), not after the
# command ends. It gets the caller's stdin back (a background job's would be /dev/null).
"$@" <&3 3<&- &
CMD_PID=$!
stop_command() {
  kill -TERM "$CMD_PID" 2>/dev/null
  wait "$CMD_PID" 2>/dev/null
  exit "$1"
}
trap 'stop_command 130' INT
trap 'stop_command 143' TERM
wait "$CMD_PID"
