#!/usr/bin/env bash
# run_fuzz.sh SRC_DIR BUILD_DIR SEEDS_BIN - fuzz the protocol decoder.
#
# Compiles proto/ (without the ZeroMQ transport) and tests/fuzz/fuzz_proto.c
# with clang's libFuzzer, ASan and UBSan into BUILD_DIR/fuzz, writes the seed
# corpus with SEEDS_BIN (plus tests/fuzz/corpus/* if present), and runs for
# FW_FUZZ_SECONDS (default 60). Exits non-zero on any finding; the input
# that caused it is left in BUILD_DIR/fuzz/ (crash-*, leak-*, timeout-*).
# HINT: copy a finding into tests/fuzz/corpus/ so proto_fuzz_replay keeps
# checking it after the fix.
set -euo pipefail
src=$1
out=$2/fuzz
seeds=$3
secs=${FW_FUZZ_SECONDS:-60}
cc=${FW_FUZZ_CC:-$(command -v clang || command -v clang-14)}
mkdir -p "$out"
rm -f "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-*

sources=()
for f in "$src"/proto/*.c; do
  [[ $(basename "$f") == fw_proto_zmq.c ]] || sources+=("$f")
done
# shellcheck disable=SC2046 # pkg-config output is meant to split
"$cc" -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -I"$src/proto" -I"$src/common" \
  "${sources[@]}" "$src/common/fw_err.c" "$src/common/fw_utf8.c" "$src/tests/fuzz/fuzz_proto.c" \
  $(pkg-config --cflags --libs msgpack liblz4) -o "$out/fuzz_proto"

corpus=$out/corpus
rm -rf "$corpus"
"$seeds" "$corpus"
if [[ -d $src/tests/fuzz/corpus ]]; then
  find "$src/tests/fuzz/corpus" -maxdepth 1 -type f -exec cp {} "$corpus"/ \;
fi

echo "fuzzing for ${secs}s over $(ls "$corpus" | wc -l) seeds"
"$out/fuzz_proto" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=16384 \
  -artifact_prefix="$out/" -print_final_stats=1 "$corpus"
if compgen -G "$out/crash-*" >/dev/null || compgen -G "$out/leak-*" >/dev/null \
   || compgen -G "$out/timeout-*" >/dev/null || compgen -G "$out/oom-*" >/dev/null; then
  echo "run_fuzz.sh: findings in $out" >&2
  exit 1
fi
echo "run_fuzz.sh: no findings"
