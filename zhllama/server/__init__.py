"""The OpenAI-compatible HTTP API that `zhllama serve` runs (FastAPI + uvicorn, the `serve` extra).

- `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (streaming too, ending in
  `data: [DONE]`), `POST /v1/embeddings` (mean-pooled, L2-normalised last hidden state, as
  Chinese-LLaMA-Alpaca-2's server computes them);
- every OpenAI request field is honoured or refused with a 400 naming it (`requests`);
- `/openapi.json` and `/docs` need the API key when one is set.

Imported only by `serve` and tests: nothing here is loaded while the CLI is built.
"""

from zhllama.server.app import ServerLimits, create_app
from zhllama.server.requests import ApiError

__all__ = ["ApiError", "ServerLimits", "create_app"]
