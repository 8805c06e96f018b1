"""Sequential stages of parallel units, then a completion task; fails fast."""
