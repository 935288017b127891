"""Built-in inference engines (entry-point group `zhllama.engines`): transformers, llama.cpp, vLLM."""
