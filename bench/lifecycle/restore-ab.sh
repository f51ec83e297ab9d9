#!/bin/bash
# A/B: prints the daemon's "engine ready" times of REPS restarts of binary BIN with N
# sandboxes (no process) on one network, in a test-owned namespace it deletes.
# Usage: sudo bench/lifecycle/restore-ab.sh BIN N REPS
# restore time of BIN with N process-less sandboxes, REPS restarts (nsenter --net, test's mount ns)
BIN=$1; N=$2; REPS=$3
S=$RANDOM; H=trs$S; D=/tmp/trs$S; mkdir -p $D; echo '{}' > $D/e.json
ip netns add $H; ip -n $H link set lo up
start(){ nsenter --net=/run/netns/$H -- $BIN daemon --data-root $D/d --exec-root $D/r -H unix://$D/s.sock --config-file $D/e.json >> $D/log 2>&1 & echo $! > $D/pid; for i in $(seq 200); do $BIN -H unix://$D/s.sock version >/dev/null 2>&1 && break; sleep 0.02; done; }
T="$BIN -H unix://$D/s.sock"
start
$T network create --subnet 10.150.0.0/16 rs >/dev/null
for i in $(seq $N); do $T sandbox create --name s$i --network rs >/dev/null; done
for r in $(seq $REPS); do kill $(cat $D/pid); while kill -0 $(cat $D/pid) 2>/dev/null; do sleep 0.02; done; start; done
grep -o 'msg="engine ready" took=[^ ]*' $D/log | tail -$REPS | tr '\n' ' '; echo
kill $(cat $D/pid); while kill -0 $(cat $D/pid) 2>/dev/null; do sleep 0.02; done
umount -l $D/r/ns 2>/dev/null; ip netns del $H; rm -rf $D
