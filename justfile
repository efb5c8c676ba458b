# keymeter: short names for the README's commands. Extra arguments are passed through,
# e.g. `just up --stores-only`, `just down --purge`, `just test -- --nocapture`.

set positional-arguments

# list the recipes
default:
    @{{just_executable()}} --list --justfile {{justfile()}}

# start the local stack (stores, then build + migrate + services); --stores-only for the stores
up *args:
    deploy/local/up.sh "$@"

# stop what the local stack started; --purge also deletes its state folder
down *args:
    deploy/local/down.sh "$@"

# start the stores if needed, then cargo test --workspace --all-targets
test *args:
    deploy/local/test.sh "$@"

# formatting and clippy, warnings are errors
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# benchmarks against the running stack (after `up`): deploy/local/bench.sh
bench *args:
    deploy/local/bench.sh "$@"
