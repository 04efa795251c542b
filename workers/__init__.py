"""Ray workers: the executor that runs audit trials on a cluster, and the dispatcher."""
