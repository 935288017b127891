"""Checkpoint formats and sources: everything that reads or writes model weights on disk.

- `names`: the one HF <-> Meta <-> GGUF <-> TencentPretrain tensor-name table, q/k permutations.
- `safetensors_io`: validated, streaming safetensors reader/writer (no memory map).
- `shards`: HF folders: config.json, weight shards (+ index), plan/validate, bounded-size writing.
- `pth`: Meta's `consolidated.NN.pth` + `params.json`; `tencentpretrain`: TencentPretrain's llama.
- `rope_config`: a model's own RoPE scaling in config.json / GGUF / params.json; adapter overrides.
- `convert`: `zhllama convert` between the formats; `sources`: `resolve_model(spec)` for any source.
Importing the package is cheap (no torch); the submodules import torch.
"""
