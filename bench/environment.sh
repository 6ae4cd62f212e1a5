# Sourced from the project root by bench/staging, bench/webhooks and bench/record_batch:
# installs what is missing, then exports the bench stack's settings (scripts/bench-stack.env),
# where any of its variables already set in the environment wins (another bench stack).
scripts/bootstrap
while IFS='=' read -r name value; do
  case $name in '' | \#*) continue ;; esac
  [ -n "${!name:-}" ] || export "$name=$value"
done <scripts/bench-stack.env
export PAYMENTS_STATE_DIR KAFKA_PORT KAFKA_CONTROLLER_PORT DB_PORT REDIS_PORT
