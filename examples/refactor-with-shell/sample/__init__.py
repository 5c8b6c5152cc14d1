"""A small shop package whose functions have no type hints yet: the refactoring target."""
