"""Parts of the single-process trainer (openrlhf_ext.local_trainer), each found by name."""
