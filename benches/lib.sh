# What the benchmark scripts need before they run, sourced by them: nginx and wrk (Debian),
# the test venv (pip, uv, SeaweedFS's weed, ... from tests/requirements.txt), and a release build.
# Sets VENV.
need_nginx_and_wrk() {
    if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
        echo "==> installing nginx and wrk"
        if [ "$(id -u)" = 0 ]; then apt-get install -y -q nginx-light wrk >/dev/null; else sudo apt-get install -y -q nginx-light wrk >/dev/null; fi
    fi
}

# $1: a program the venv must have (uv, weed, ...).
need_venv() {
    VENV="${LARDER_E2E_VENV:-$PWD/.venv-e2e}"
    if [ ! -x "$VENV/bin/$1" ]; then
        echo "==> installing the test clients into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
    fi
}

release_build() {
    echo "==> cargo build --release"
    cargo build --release --quiet
}
