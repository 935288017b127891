"""`python -m zhllama` (also what `torchrun -m zhllama` and `accelerate launch -m zhllama` run)."""

from zhllama.cli.app import main

if __name__ == "__main__":
    main()
