"""Files the program ships from the repository."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Built by scripts/build-lambda-deps.sh (psycopg for the Lambda runtime); needed by phases b and c.
LAMBDA_DEPS = REPO / "build" / "lambda-deps.zip"
