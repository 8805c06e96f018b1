"""The smallest Ratline workflow: three checkpointed steps."""
