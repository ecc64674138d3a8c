"""The paper's comparisons as commands: runs over seeds and variants, tables beside the paper's
numbers (docs/results.md)."""
