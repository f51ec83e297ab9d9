#!/bin/bash
# Reproduces issue 12 with BIN: a daemon started with `ip netns exec`, 25 `run -d`,
# a restart (a new mount namespace), 25 more; prints failures and survivors.
BIN=$1
S=$RANDOM; H=trp$S; D=/tmp/trp$S; mkdir -p $D; echo '{}' > $D/e.json
ip netns add $H; ip -n $H link set lo up
start(){ ip netns exec $H $BIN daemon --data-root $D/d --exec-root $D/r -H unix://$D/s.sock --config-file $D/e.json >> $D/log 2>&1 & echo $! > $D/pid; for i in $(seq 200); do $BIN -H unix://$D/s.sock version >/dev/null 2>&1 && break; sleep 0.02; done; }
stop(){ kill $(cat $D/pid); while kill -0 $(cat $D/pid) 2>/dev/null; do sleep 0.02; done; }
T="$BIN -H unix://$D/s.sock"
start
$T network create --subnet 10.151.0.0/24 rp >/dev/null
run(){ if $T run -d --name r$1 --network rp -- sleep 600 >/dev/null 2>>$D/err; then p=$($T sandbox inspect r$1 --format '{{range .Processes}}{{.Pid}}{{end}}'); echo "$p $(cut -d' ' -f22 /proc/$p/stat)" >> $D/pids; else fail=$((fail+1)); fi; }
fail=0; for i in $(seq 0 24); do run $i; done
before=$($T sandbox ls -q | wc -l)
stop; start
after=$($T sandbox ls -q | wc -l)
for i in $(seq 25 49); do run $i; done
echo "runs failed: $fail of 50; sandboxes before the restart: $before, after: $after"
echo "first run error: $(head -1 $D/err)"
echo "restore log lines: $(grep -c 'namespace is gone' $D/log) 'namespace is gone', $(grep -c 'recover sandbox namespace' $D/log) 'recover sandbox namespace'"
for id in $($T sandbox ls -q); do $T rm -f $id >/dev/null 2>&1; done
stop
# the sleep processes this script started, by PID and start time (those of
# sandboxes the daemon dropped are still running)
while read -r p st; do [ "$(cut -d' ' -f22 /proc/$p/stat 2>/dev/null)" = "$st" ] && kill $p; done < $D/pids
ip netns pids $H 2>/dev/null | xargs -r kill 2>/dev/null
umount -l $D/r/ns 2>/dev/null; ip netns del $H; rm -rf $D
