"""DiTalker training: dataset preprocessing, the three-phase trainer and the SyncNet trainer (see README.md)."""
