#!/usr/bin/env bash
# Build (once) and cache a portable llama-cpp-python wheel.
#
# Why: PyPI ships llama-cpp-python only as an sdist, and the default build enables GGML_NATIVE, which turns on
# AMX on these CPUs and segfaults on the first decode (see docs/adr/0002-local-model-server.md). We build
# without AVX512/AMX and keep the wheel outside the repo so `make up` and `make test` compile at most once per machine.
set -euo pipefail
version="${LLAMA_CPP_VERSION:-0.3.36}"
cache="${AI_ASSISTANT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ai-assistant/wheels}"
python="${1:-python3}"
mkdir -p "$cache"
if compgen -G "$cache/llama_cpp_python-${version}-*.whl" >/dev/null; then
  echo "llama-cpp-python ${version}: cached wheel in $cache"
  exit 0
fi
echo "llama-cpp-python ${version}: building a portable wheel (one time, about 4-6 minutes on 2 cores)..."
start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$python" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "llama-cpp-python==${version}"
mv "$tmp"/llama_cpp_python-*.whl "$cache/"
echo "llama-cpp-python ${version}: built in $(( $(date +%s) - start )) s, cached in $cache"
