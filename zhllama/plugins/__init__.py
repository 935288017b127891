"""Built-in backends, registered through the same entry points as third-party ones."""
