"""Where the node keeps data: the object host (replicas and group commit), the
heads database, the IPFS block store, the Archivist's records and the
quarantine of blocks that failed validation.
"""
