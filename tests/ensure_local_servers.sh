#!/usr/bin/env bash
# Starts the machine's own PostgreSQL (5432) and NATS (4222) if they are down,
# so the external-server test pass has something to talk to.
set -u
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! up 5432 && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! up 4222 && [ -x /usr/sbin/nats-server ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
fi
for _ in $(seq 50); do up 5432 && up 4222 && exit 0; sleep 0.2; done
up 5432 || echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2
up 4222 || echo "NATS is not reachable on 127.0.0.1:4222" >&2
exit 1
