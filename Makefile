# The targets are the commands the README documents.
.PHONY: run test bench chaos build deploy deploy-cargo-lambda invoke lint check-template clean

## make run: the relay end to end on a local stack (moto, PostgreSQL, cargo lambda watch)
run:
	@scripts/run.sh

## make test: every test (starts and stops its own local stack)
test:
	@scripts/test.sh

## make lint: formatting and clippy, as make test runs them
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## make check-template: cfn-lint, sam validate and the IAM wildcard check
check-template:
	@scripts/check-template.sh

clean:
	cargo clean
	rm -rf .venv .aws-sam
