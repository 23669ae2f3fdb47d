# The targets are the commands the README documents.
.PHONY: run test chaos bench build deploy deploy-cargo-lambda invoke lint check-template clean

## make run: the relay end to end on a local stack (DynamoDB Local, LocalStack SQS,
##   moto for Secrets Manager, PostgreSQL, cargo lambda watch)
run:
	@scripts/run.sh

## make test: every test (starts and stops its own local stack)
test:
	@scripts/test.sh

## make chaos: the fault scenarios of tests/it/faults/ at full size, on make test's stack
chaos:
	@CHAOS_SCALE=10 TEST_SUITES=faults TEST_ARGS="--nocapture" scripts/test.sh

## make bench: the relay beside a naive per-row relay, faithful stack and AWS-like
##   latency (release build); the table and target/bench/results.json
bench:
	@scripts/bench.sh

## make build: release Lambda binaries for arm64 and x86_64 (cargo-lambda, zig):
##   target/lambda/arm64/outbox-relay/bootstrap.zip, target/lambda/x86_64/outbox-relay/bootstrap.zip
build:
	@scripts/tools.sh --build
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip --lambda-dir target/lambda/arm64
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --x86-64 --output-format zip --lambda-dir target/lambda/x86_64

## make deploy: SAM build and a guided deploy (needs AWS credentials)
deploy:
	@scripts/tools.sh --deploy
	PATH="$(CURDIR)/.venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 sam build
	PATH="$(CURDIR)/.venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 sam deploy --guided

ENV_FILE ?= infra/lambda.env
MEMORY ?= 256
TIMEOUT ?= 120
## make deploy-cargo-lambda: deploy the arm64 function with cargo-lambda
##   IAM_ROLE=<role ARN> [ENV_FILE=infra/lambda.env] [MEMORY=256] [TIMEOUT=120];
##   the file (from infra/lambda.env.example) becomes the function's whole environment
deploy-cargo-lambda:
	@test -n "$(IAM_ROLE)" || { echo "make deploy-cargo-lambda: set IAM_ROLE=arn:aws:iam::ACCOUNT:role/outbox-relay (see docs/operations.md)"; exit 2; }
	@test -f "$(ENV_FILE)" || { echo "make deploy-cargo-lambda: $(ENV_FILE) not found: cp infra/lambda.env.example $(ENV_FILE), fill it in (README \"Deploy with cargo-lambda\"), or set ENV_FILE=<file>"; exit 2; }
	@! grep -Eq '^ *[^# ][^#]*<[A-Z_]+>' "$(ENV_FILE)" || { echo "make deploy-cargo-lambda: $(ENV_FILE) still has <PLACEHOLDERS>: $$(grep -v '^ *#' "$(ENV_FILE)" | grep -Eo '<[A-Z_]+>' | sort -u | tr '\n' ' ')"; exit 2; }
	@scripts/tools.sh --build
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip --lambda-dir target/lambda/arm64
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda deploy outbox-relay --lambda-dir target/lambda/arm64 \
	  --iam-role "$(IAM_ROLE)" --memory $(MEMORY) --timeout $(TIMEOUT) --env-file "$(ENV_FILE)"

## make invoke: a manual backfill pass on the deployed function
##   FUNCTION=<name> [MAX_ROWS=50000] [DRY_RUN=false]
invoke:
	@test -n "$(FUNCTION)" || { echo "make invoke: set FUNCTION=<deployed function name>"; exit 2; }
	aws lambda invoke --function-name "$(FUNCTION)" --cli-binary-format raw-in-base64-out \
	  --cli-read-timeout 0 --payload '{"max_rows":$(or $(MAX_ROWS),50000),"dry_run":$(or $(DRY_RUN),false)}' \
	  /dev/stdout

## make lint: formatting and clippy, as make test runs them
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --features faults -- -D warnings

## make check-template: cfn-lint, sam validate and the IAM rules (cfn-guard, infra/guard/)
check-template:
	@scripts/check-template.sh

clean:
	cargo clean
	rm -rf .venv .aws-sam
