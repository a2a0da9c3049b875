# Sourced by the benchmarks. With BENCH_PIN=1, `pin_cpus` gives the broker and the client a CPU
# each: the Erlang VM of the broker that listens on 127.0.0.1:5672 here (inside a broker
# namespace, that broker) is pinned to CPU 0 for the rest of the run, the calling script, and
# so every command it starts from then on (dlq, the pika baseline), to CPU 1. That is the case
# of dlq run from another host than the broker: on a 2-core machine dlq's own CPU otherwise
# comes out of the broker's, while the shovel, inside the broker, has no client to pay for.
# The broker's affinity is put back by `unpin_cpus` (call it from the script's exit trap).
pin_cpus() {
  [[ ${BENCH_PIN:-} == 1 ]] || return 0
  if [[ $(nproc) -lt 2 ]]; then
    echo "BENCH_PIN: needs 2 CPUs, this machine has $(nproc)" >&2
    exit 1
  fi
  pinned_beam=$(ss -Hltnp 'sport = :5672' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  if [[ -z $pinned_beam ]]; then
    echo "BENCH_PIN: no process listens on port 5672 here" >&2
    exit 1
  fi
  pinned_mask=$(taskset -p "$pinned_beam" | awk '{print $NF}')
  taskset -a -p 1 "$pinned_beam" >/dev/null
  taskset -p 2 $$ >/dev/null
  echo "BENCH_PIN: the broker (pid $pinned_beam) runs on CPU 0, the benchmark and dlq on CPU 1" >&2
}
unpin_cpus() {
  if [[ -n ${pinned_mask:-} ]]; then
    taskset -a -p "$pinned_mask" "$pinned_beam" >/dev/null 2>&1 || true
  fi
}
