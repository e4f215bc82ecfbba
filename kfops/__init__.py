"""kfops."""
